"""The export formats by name (``scripts/export.py --format``): how each writes a ``SingleImageDetector`` to
a file, loads that file into a runtime, and names the runtime."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from datnet.deploy import onnx_format, torchscript_format
from datnet.deploy.detector import Runner, SingleImageDetector


@dataclass(frozen=True)
class ExportFormat:
    """One format: ``export(detector, example image, path)`` writes the file (``suffix``), ``load(path)`` runs
    it, ``runtime()`` names what runs it, with its version."""

    suffix: str
    export: Callable[[SingleImageDetector, Tensor, Path], Path]
    load: Callable[[Path], Runner]
    runtime: Callable[[], str]


FORMATS = {
    "onnx": ExportFormat(".onnx", onnx_format.export_onnx, onnx_format.load_onnx, onnx_format.runtime),
    "torchscript": ExportFormat(
        ".pt",
        torchscript_format.export_torchscript,
        torchscript_format.load_torchscript,
        torchscript_format.runtime,
    ),
}
