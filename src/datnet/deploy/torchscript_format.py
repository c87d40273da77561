"""TorchScript: the detector traced by ``torch.jit.trace`` (the tracing paths of torchvision's detection
code, as for ONNX, so that the image size stays dynamic), saved and run by ``torch.jit.load``.

Tracing, not ``torch.jit.script``: DATNet's modules call ``super()`` in overridden methods and take string
type annotations and keyword-only arguments, none of which TorchScript's compiler accepts."""

from pathlib import Path

import torch
from torch import Tensor

from datnet.deploy.detector import Runner, SingleImageDetector
from datnet.deploy.tracing import quiet_tracing


def export_torchscript(detector: SingleImageDetector, example: Tensor, path: Path) -> Path:
    """Writes ``detector`` traced on ``example`` (a float RGB image (3, H, W)) to ``path``; returns
    ``path``."""
    with quiet_tracing():
        traced = torch.jit.trace(detector, (example,), check_trace=False)
    traced.save(str(path))
    return path


def load_torchscript(path: Path) -> Runner:
    """The TorchScript file at ``path`` on the CPU, as a function of one image tensor that returns the output
    tensors."""
    module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(image: Tensor) -> tuple[Tensor, ...]:
        with torch.no_grad():
            return tuple(module(image))

    return run


def runtime() -> str:
    """``torch <version>`` (``torch.jit.load``)."""
    return f"torch {torch.__version__}"
