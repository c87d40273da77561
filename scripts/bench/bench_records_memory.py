"""Memory that forked loader workers copy from the dataset's records: a Python list vs `SerializedRecords`.

Builds COCO-train-like records (default 118k images x 7 instances, each a 24-point polygon), then lets
`--workers` DataLoader workers read every record once, as an epoch does, and reports the largest private
(copied) memory of a worker, read from `/proc/self/smaps_rollup` (Linux), for both storages, side by side.
The list is dropped before the serialised records are measured, as `DetectionDataset` drops it: a list left
alive in the main process is still copied, page by page, when a worker's garbage collector walks it.

    .venv/bin/python scripts/bench/bench_records_memory.py [--images 118000] [--workers 2] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
from collections.abc import Sequence
from pathlib import Path

from torch.utils.data import DataLoader, Dataset

from datnet.data.records import ImageRecord, Instance, SerializedRecords


def coco_like_records(num_images: int, instances: int, points: int) -> list[ImageRecord]:
    """Seeded synthetic records with the shape of COCO train2017's (polygons in float pixels)."""
    rng = random.Random(0)
    records = []
    for image_id in range(num_images):
        objects = []
        for k in range(instances):
            x, y = rng.uniform(0, 500), rng.uniform(0, 400)
            polygon = [round(v + rng.uniform(0, 100), 2) for _ in range(points) for v in (x, y)]
            objects.append(Instance(image_id * instances + k, (x, y, x + 100, y + 100), 1, [polygon], 1e4))
        records.append(ImageRecord(image_id, Path(f"train2017/{image_id:012d}.jpg"), 640, 480, objects))
    return records


def private_kib() -> int:
    """Private (copied-on-write or own) memory of this process in KiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:])
    return sum(int(fields[k].split()[0]) for k in ("Private_Clean", "Private_Dirty"))


class ReadEveryRecord(Dataset):
    """Reads one record per item (as `DetectionDataset.__getitem__` does) and reports the worker's memory."""

    def __init__(self, records: Sequence[ImageRecord]) -> None:
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> int:
        assert self.records[index].image_id == index
        return private_kib() if index % 1000 == 999 else 0


def largest_worker_private_mib(records: Sequence[ImageRecord], workers: int) -> float:
    loader = DataLoader(ReadEveryRecord(records), batch_size=1000, num_workers=workers, collate_fn=max)
    return max(loader) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=118_000)
    parser.add_argument("--instances", type=int, default=7, help="per image (COCO train2017: 7.3)")
    parser.add_argument("--points", type=int, default=24, help="per polygon")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args()
    records = coco_like_records(args.images, args.instances, args.points)
    as_list = largest_worker_private_mib(records, args.workers)
    serialized = SerializedRecords(records)
    del records  # as DetectionDataset does: no Python copy left for the workers' garbage collector to touch
    gc.collect()
    result = {
        "images": args.images,
        "workers": args.workers,
        "serialized_mib": round(serialized.nbytes / 2**20, 1),
        "worker_private_mib_list": round(as_list, 1),
        "worker_private_mib_serialized": round(largest_worker_private_mib(serialized, args.workers), 1),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:<32}{value}")


if __name__ == "__main__":
    main()
