"""Loader benchmark on real COCO images (shared/data/tiny_coco) at short side 800, on one core.

Measures, per image, the dense auxiliary targets of Sec. 3.1 alone at each stride of `--aux-strides`
(`ms_per_image_aux_s1`: the pixel-level targets of the paper's image-resolution loss; `..._s4`: the same
sampled at the stride-4 cells; CPU time, each image's best of `--repeats`, mean and maximum over the
images) and the whole `__getitem__` (decode, masks, jitter/flip/resize, aux targets at `--aux-stride`,
tensors; wall-clock: `ms_per_image_total`), with torch/OpenCV limited to one thread and no loader workers;
and the size of a sample as a loader worker sends it (the tensors' bytes, image and target, in MB of 10^6
bytes), mean and maximum over the images: `mb_per_sample` for the uint8 image, bit-packed masks and uint8
`dt`/`sem` maps that workers send, `mb_per_sample_float32_dense` for the same sample with a float32 image
and uint8 NxHxW masks.

    .venv/bin/python scripts/bench/bench_data.py [--root DIR] [--split val] [--repeats 2] [--aux-stride 1]
        [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from datnet.configs import shared_data_root
from datnet.data.aux_targets import dense_aux_targets
from datnet.data.coco import load_coco
from datnet.data.dataset import DetectionDataset
from datnet.data.masks import decode_masks
from datnet.data.transforms import AugmentConfig, apply_transforms, build_transforms

DEFAULT_ROOT = shared_data_root()


def sample_bytes(image: torch.Tensor, target: dict) -> tuple[int, int]:
    """Bytes of the sample's tensors as sent (uint8 image, `masks_packed`) and as they would be with a float32
    image and uint8 NxHxW masks instead."""
    sent = image.nbytes + sum(v.nbytes for v in target.values() if isinstance(v, torch.Tensor))
    dense_masks = len(target["labels"]) * image.shape[-2] * image.shape[-1]
    return sent, sent - image.nbytes + 4 * image.numel() - target["masks_packed"].nbytes + dense_masks


def aux_target_ms(inputs: list[tuple[np.ndarray, ...]], stride: int, repeats: int) -> np.ndarray:
    """CPU milliseconds of `dense_aux_targets` at `stride` for each (masks, labels, ignore masks), the best of
    `repeats` runs: the process's CPU time (one thread), which other processes on a shared machine barely
    change, unlike the wall-clock time."""
    times = np.full(len(inputs), np.inf)
    for _ in range(repeats):
        for k, (masks, labels, ignore) in enumerate(inputs):
            start = time.process_time()
            dense_aux_targets(masks, labels, ignore, stride)
            times[k] = min(times[k], (time.process_time() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT / "tiny_coco", help="COCO-format directory")
    parser.add_argument("--split", default="val")
    parser.add_argument("--repeats", type=int, default=2, help="passes over the split")
    parser.add_argument("--aux-strides", type=int, nargs="+", default=[1, 4], help="aux targets timed alone")
    parser.add_argument("--aux-stride", type=int, default=1, help="the dataset's (data.aux_stride)")
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    source = load_coco(
        args.root / "annotations" / f"instances_{args.split}2017.json", args.root / f"{args.split}2017"
    )
    dataset = DetectionDataset(
        source, build_transforms(AugmentConfig(), train=True), aux_stride=args.aux_stride
    )
    eval_resize = build_transforms(AugmentConfig(), train=False)

    # aux targets alone, on the masks of the resized image (what the dataset feeds them)
    inputs = []
    for rec in dataset.records:
        objects = [i for i in rec.instances if not dataset.is_ignore_region(i)]
        ignored = [i for i in rec.instances if dataset.is_ignore_region(i)]
        masks = decode_masks(objects + ignored, rec.height, rec.width)
        image = np.zeros((rec.height, rec.width, 3), np.uint8)
        boxes = np.array([i.bbox for i in objects + ignored], np.float32).reshape(-1, 4)
        _, masks, _, keep = apply_transforms(eval_resize, image, masks, boxes)
        is_object = keep < len(objects)
        inputs.append((np.ascontiguousarray(masks[is_object]), np.ones(is_object.sum()), masks[~is_object]))
    aux_ms = {stride: aux_target_ms(inputs, stride, args.repeats) for stride in args.aux_strides}

    dataset[0]  # warm-up
    start = time.perf_counter()
    for _ in range(args.repeats):
        for i in range(len(dataset)):
            dataset[i]
    total_ms = (time.perf_counter() - start) * 1000 / (args.repeats * len(dataset))

    sizes = np.array([sample_bytes(*dataset[i]) for i in range(len(dataset))]) / 1e6
    result = {
        **{f"ms_per_image_aux_s{stride}": round(float(ms.mean()), 2) for stride, ms in aux_ms.items()},
        **{f"ms_per_image_aux_s{stride}_max": round(float(ms.max()), 2) for stride, ms in aux_ms.items()},
        "aux_stride": args.aux_stride,
        "ms_per_image_total": round(total_ms, 2),
        "mb_per_sample": round(float(sizes[:, 0].mean()), 2),
        "mb_per_sample_max": round(float(sizes[:, 0].max()), 2),
        "mb_per_sample_float32_dense": round(float(sizes[:, 1].mean()), 2),
        "mb_per_sample_float32_dense_max": round(float(sizes[:, 1].max()), 2),
    }
    if args.json:
        print(json.dumps(result))
        return
    n_inst = np.mean([len(m) for m, _, _ in inputs])
    print(
        f"{len(dataset)} images of {args.root} ({args.split}), short side 800, {n_inst:.1f} instances/image"
    )
    for stride, ms in aux_ms.items():
        print(
            f"aux targets (DT + semantic, stride {stride}): {ms.mean():.2f} ms/image mean, {ms.max():.2f} max"
        )
    print(f"whole __getitem__ (1 core, no workers, aux stride {args.aux_stride}): {total_ms:.2f} ms/image")
    for label, key in (
        (
            f"sample as sent (uint8 image, packed masks, aux maps at stride {args.aux_stride})",
            "mb_per_sample",
        ),
        ("the same with a float32 image and dense masks", "mb_per_sample_float32_dense"),
    ):
        print(f"{label}: {result[key]:.2f} MB mean, {result[key + '_max']:.2f} MB max")


if __name__ == "__main__":
    main()
