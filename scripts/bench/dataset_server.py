"""Serves one checkout's `DetectionDataset` to `bench_data.py` over pipes, so that two versions of the loader
(the working tree and a baseline commit) run side by side in one benchmark, each in its own process.

Run by `bench_data.py` with the checkout's `src` first on PYTHONPATH; it uses only the API that both versions
share (`load_coco`, `DetectionDataset`, `build_transforms`, `AugmentConfig`). Requests and replies are
pickled dicts on stdin / stdout (anything printed goes to stderr):

* `{"cmd": "info"}`: the `datnet` package it imported and the number of images.
* `{"cmd": "pass", "seed": s}`: one pass over the split with the augmentation stream seeded with `s`;
  wall-clock and CPU milliseconds per image.
* `{"cmd": "profile", "seed": s}`: the same pass under cProfile; milliseconds per image spent in each function
  that `__getitem__` calls directly (inflated by the profiler, for the shares of the stages).
* `{"cmd": "sample", "index": i, "seed": s}`: item `i` with the stream seeded with `s`, as NumPy arrays.
* `{"cmd": "exit"}`.

    PYTHONPATH=<checkout>/src python scripts/bench/dataset_server.py ROOT SPLIT AUX_STRIDE
"""

from __future__ import annotations

import cProfile
import pickle
import pstats
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import torch

import datnet
from datnet.data.coco import load_coco
from datnet.data.dataset import DetectionDataset
from datnet.data.transforms import AugmentConfig, build_transforms


def timed_pass(dataset: DetectionDataset, seed: int) -> dict[str, float]:
    """Wall-clock and CPU milliseconds per image of one pass over `dataset`."""
    dataset.transforms.set_random_seed(seed)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(len(dataset)):
        dataset[i]
    n = len(dataset)
    return {
        "wall_ms": (time.perf_counter() - wall) * 1000 / n,
        "cpu_ms": (time.process_time() - cpu) * 1000 / n,
    }


def stage_profile(dataset: DetectionDataset, seed: int) -> dict[str, float]:
    """Milliseconds per image in each function that `__getitem__` calls directly (cumulative, under cProfile),
    with `__getitem__`'s own remainder as "(__getitem__ itself)"."""
    dataset.transforms.set_random_seed(seed)
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(len(dataset)):
        dataset[i]
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    getitem = next(f for f in stats if f[2] == "__getitem__" and f[0].endswith("dataset.py"))
    n = len(dataset)
    stages: dict[str, float] = {}
    for func, (*_, callers) in stats.items():
        if getitem in callers:
            stages[func[2]] = stages.get(func[2], 0.0) + callers[getitem][3] * 1000 / n
    stages["(__getitem__ itself)"] = stats[getitem][3] * 1000 / n - sum(stages.values())
    return stages


def sample(dataset: DetectionDataset, index: int, seed: int) -> dict[str, Any]:
    """Item `index` as NumPy arrays (image and the target's tensors)."""
    dataset.transforms.set_random_seed(seed)
    image, target = dataset[index]
    return {
        "image": image.numpy(),
        **{k: v.numpy() for k, v in target.items() if isinstance(v, torch.Tensor)},
    }


def main() -> None:
    root, split, aux_stride = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    source = load_coco(root / "annotations" / f"instances_{split}2017.json", root / f"{split}2017")
    dataset = DetectionDataset(source, build_transforms(AugmentConfig(), train=True), aux_stride=aux_stride)
    handlers = {
        "info": lambda r: {"package": str(Path(datnet.__file__).parent), "images": len(dataset)},
        "pass": lambda r: timed_pass(dataset, r["seed"]),
        "profile": lambda r: stage_profile(dataset, r["seed"]),
        "sample": lambda r: sample(dataset, r["index"], r["seed"]),
    }
    while (request := pickle.load(requests))["cmd"] != "exit":
        pickle.dump(handlers[request["cmd"]](request), replies)
        replies.flush()


if __name__ == "__main__":
    main()
