"""Tracing a detector for export without the tracer's noise."""

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

# warnings of tracing itself, not of the model: Python values taken as constants (the sizes that matter follow
# torchvision's tracing paths, and ``scripts/export.py --check`` compares with the eager model on other
# images), torchvision's ``torch.tensor(tensor)`` under tracing, the ONNX exporter's Slice constant folding,
# its caution about negative indices (the detectors index with torch.where / arange / labels: never negative)
QUIET_MESSAGES = (
    "To copy construct from a tensor",
    "Constant folding - Only steps=1",
    "You are using the legacy TorchScript-based ONNX export",
    "Exporting aten::index operator of advanced indexing",
)


@contextmanager
def quiet_tracing() -> Iterator[None]:
    """No gradients, and the tracer's own warnings silenced (``QUIET_MESSAGES``, ``TracerWarning``); the
    deprecation warnings of ``torch.jit`` stay."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        for message in QUIET_MESSAGES:
            warnings.filterwarnings("ignore", message=message)
        yield
