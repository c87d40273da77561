"""Running a trained DATNet outside training: the exported detector (one image in, plain tensors out), its
ONNX and TorchScript files and their runtimes, the comparison of exported and eager detections, and video
frames in and out.

Imports ``datnet.models`` only; ``scripts/export.py`` and ``scripts/predict.py`` use it.
"""

from datnet.deploy.compare import compare_detections
from datnet.deploy.detector import SingleImageDetector
from datnet.deploy.formats import FORMATS

__all__ = ["FORMATS", "SingleImageDetector", "compare_detections"]
