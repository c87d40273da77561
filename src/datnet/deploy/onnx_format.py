"""ONNX: the detector traced by PyTorch's TorchScript-based exporter (``dynamo=False``, the exporter that
torchvision's own ONNX tests of Mask R-CNN use; its tracing paths make resizing, anchors, NMS and mask pasting
follow the input's size), run with onnxruntime on the CPU."""

from pathlib import Path

import torch
from torch import Tensor

from datnet.deploy.detector import Runner, SingleImageDetector
from datnet.deploy.tracing import quiet_tracing

OPSET = 17
INPUT = "image"
# dynamic axes: the image's height and width; the number of detections; the pasted masks' height and width
DYNAMIC_AXES = {INPUT: [1, 2], "boxes": [0], "labels": [0], "scores": [0], "masks": [0, 2, 3]}


def export_onnx(detector: SingleImageDetector, example: Tensor, path: Path, opset: int = OPSET) -> Path:
    """Writes ``detector`` traced on ``example`` (a float RGB image (3, H, W)) to ``path`` at ``opset``, with
    the image size and the number of detections dynamic; returns ``path``."""
    names = list(detector.output_names)
    with quiet_tracing():
        torch.onnx.export(
            detector,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT],
            output_names=names,
            dynamic_axes={name: DYNAMIC_AXES[name] for name in (INPUT, *names)},
        )
    return path


def load_onnx(path: Path) -> Runner:
    """An onnxruntime CPU session of the file at ``path``, as a function of one image tensor that returns the
    output tensors."""
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError("running an ONNX file needs onnxruntime: pip install -e '.[export]'") from error
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: no warnings about initializers the graph leaves unused
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(image: Tensor) -> tuple[Tensor, ...]:
        outputs = session.run(None, {INPUT: image.detach().cpu().numpy()})
        return tuple(torch.from_numpy(output) for output in outputs)

    return run


def runtime() -> str:
    """``onnxruntime <version>``."""
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"
