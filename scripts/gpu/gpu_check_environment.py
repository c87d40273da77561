"""The GPU check's part ``environment``: Python, the project's packages, CUDA, cuDNN and the GPU."""

import importlib.metadata
import os
import platform
import sys
from typing import Any

import torch
from gpu_check_settings import Context

PACKAGES = (
    "torch",
    "torchvision",
    "pytorch-lightning",
    "torchmetrics",
    "numpy",
    "scipy",
    "opencv-python-headless",
    "hydra-core",
    "omegaconf",
    "pycocotools",
    "faster-coco-eval",
    "albumentations",
)


def part_environment(ctx: Context) -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    result: dict[str, Any] = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "packages": versions,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_count": os.cpu_count(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        result.update(
            gpu=props.name,
            gpu_memory_gb=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            gpu_count=torch.cuda.device_count(),
        )
    import datnet.runs.tasks  # noqa: F401  (the whole harness imports with these packages)

    return result
