"""Images per second of the real training DataLoader: tiny_coco train through the project's data module, built
as a training run builds it (``conf/train.yaml`` with ``data=coco``, Hydra ``instantiate``; the paper's
augmentation and its per-pixel auxiliary targets, Sec. 3.1 and Sec. 4), with and without multi-scale
training, for each number of loader workers.

The loop only takes the batches (no model), so it measures what the workers deliver: after `--warmup`
batches (worker start-up, the first prefetch) it times `--batches` batches, the loader running over as many
epochs as that takes (its workers are persistent, as in training). `images_per_s_per_worker` divides by the
workers, the cores they use (OpenCV and torch run on one thread in each).

    .venv/bin/python scripts/bench/bench_loader.py [--root DIR] [--workers 1 2] [--batches 60] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from torch.utils.data import DataLoader

from datnet.configs import compose_config, shared_data_root


def endless(loader: DataLoader) -> Iterator[Any]:
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


def images_per_second(root: Path, workers: int, multiscale: bool, warmup: int, batches: int) -> dict:
    """Time `batches` training batches of the data module after `warmup` batches."""
    cfg = compose_config(
        [
            "data=coco",
            f"data.root={root}",
            f"data.num_workers={workers}",
            f"data.multiscale={multiscale}",
            "data.pin_memory=false",
        ],
        config_name="train",
    )
    loader = instantiate(cfg.data).train_dataloader()
    stream = endless(loader)
    for _ in itertools.islice(stream, warmup):
        pass
    count = 0
    start = time.perf_counter()
    for images, _, skipped in itertools.islice(stream, batches):
        count += len(images) + len(skipped)
    seconds = time.perf_counter() - start
    del stream, loader  # stops the persistent workers
    return {
        "multiscale": multiscale,
        "workers": workers,
        "aux_stride": cfg.data.aux_stride,
        "batch_size": cfg.data.batch_size,
        "images": count,
        "seconds": round(seconds, 2),
        "images_per_s": round(count / seconds, 1),
        "images_per_s_per_worker": round(count / seconds / workers, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=shared_data_root() / "tiny_coco")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="loader workers to try")
    parser.add_argument("--warmup", type=int, default=6, help="batches before timing")
    parser.add_argument("--batches", type=int, default=60, help="batches timed per setting")
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args()
    if min(args.workers) < 1:
        parser.error("--workers: each must be >= 1 (the loader's worker processes)")

    runs = [
        images_per_second(args.root, workers, multiscale, args.warmup, args.batches)
        for multiscale in (False, True)
        for workers in args.workers
    ]
    if args.json:
        print(json.dumps({"root": str(args.root), "runs": runs}))
        return
    print(f"training loader on {args.root} (train split), batches of {runs[0]['batch_size']}")
    for run in runs:
        print(
            f"multiscale={run['multiscale']!s:5} workers={run['workers']}: "
            f"{run['images_per_s']:6.1f} images/s, {run['images_per_s_per_worker']:5.1f} per worker "
            f"({run['images']} images in {run['seconds']} s)"
        )


if __name__ == "__main__":
    main()
