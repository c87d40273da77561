"""Memory and time of COCO evaluation under DDP: gathered to rank 0 (`CocoEvaluator`) vs all-gathered.

Simulates COCO val (default 5000 images of COCO-like sizes, ~7 ground-truth objects per image with polygon
or RLE masks, 100 detections with masks and 1000 proposals per image, all seeded) and runs it through
`CocoEvaluator.update` / `compute` as the LightningModule does, on `--ranks` CPU processes of a gloo group,
each evaluating its contiguous shard (`InferenceSampler`): `rank0` as the final validation and `eval.py`
(boxes, masks and proposal recall), `mid_run` as a validation in the middle of training (boxes and masks;
`module.mid_run_reports=false`). Beside them, `AllGatherEvaluator` reproduces the
evaluator before the rank-0 gathering: COCO record dicts kept per image, all-gathered to every rank, and
scored by every rank. Per rank, the peak resident memory above the rank's resident memory before evaluation
is read from the kernel (`VmHWM` after resetting it through `/proc/self/clear_refs`, Linux); `seconds` is
the wall time of the slowest rank from the first update to the metrics, `compute_seconds` that of `compute`.

    .venv/bin/python scripts/bench/bench_eval.py [--images 5000] [--ranks 2]
        [--paths rank0 mid_run all_gather] [--json]

Mind the host: `all_gather` takes ~2.2 MB per image on every rank (~11 GB per rank for 5000 images).
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import json
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import torch
import torch.distributed as dist
from faster_coco_eval import COCO
from torch.multiprocessing import start_processes

from datnet.data.samplers import InferenceSampler
from datnet.evaluation import (
    CocoEvaluator,
    ImageResults,
    detection_metrics,
    proposal_recall,
)
from datnet.evaluation.distributed import all_gather_object

# The 80 category ids of COCO (1..90 with gaps).
CATEGORY_IDS = [i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]
LABEL_TO_CATEGORY_ID = {label: category_id for label, category_id in enumerate(CATEGORY_IDS, start=1)}
DETECTIONS, PROPOSALS, OBJECTS_PER_IMAGE = 100, 1000, 7
IOU_TYPES = ("bbox", "segm")
PATHS = ("rank0", "mid_run", "all_gather")
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def ellipse(rng: np.random.Generator, height: int, width: int) -> tuple[list[float], list[float]]:
    """A 16-point polygon of an ellipse of log-uniform area (COCO's small, medium and large objects) inside
    the image, and its ``[x, y, w, h]`` box."""
    side = math.exp(rng.uniform(math.log(6), math.log(min(height, width) * 0.9)))
    w, h = side * rng.uniform(0.6, 1.4), side * rng.uniform(0.6, 1.4)
    w, h = min(w, width - 2), min(h, height - 2)
    x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    xs, ys = x + w / 2 * (1 + np.cos(angles)), y + h / 2 * (1 + np.sin(angles))
    polygon = np.stack([xs, ys], axis=1).round(2).ravel().tolist()
    return polygon, [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()), float(ys.max() - ys.min())]


def coco_like_ground_truth(num_images: int) -> dict:
    """Seeded COCO-format ground truth: images with a long side of 640 and a short side of 360-512, a
    Poisson(7) number of objects each, 90% polygon and 10% compressed-RLE masks, 80 categories."""
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        short = int(rng.integers(360, 513))
        height, width = (short, 640) if rng.random() < 0.7 else (640, short)
        images.append({"id": image_id, "height": height, "width": width, "file_name": f"{image_id:012d}.jpg"})
        for _ in range(rng.poisson(OBJECTS_PER_IMAGE)):
            polygon, box = ellipse(rng, height, width)
            rle = mask_util.merge(mask_util.frPyObjects([polygon], height, width))
            segmentation: list | dict = [polygon]
            if rng.random() < 0.1:
                segmentation = {"size": rle["size"], "counts": rle["counts"].decode("utf-8")}
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(rng.choice(CATEGORY_IDS)),
                    "segmentation": segmentation,
                    "area": float(mask_util.area(rle)),
                    "bbox": box,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": category_id, "name": f"class{category_id}"} for category_id in CATEGORY_IDS]
    return {"images": images, "annotations": annotations, "categories": categories}


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """``[x, y, w, h]`` rows as ``[x1, y1, x2, y2]``."""
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def prediction_of(
    image: Mapping, objects: Sequence[Mapping], buffer: torch.Tensor
) -> dict[str, torch.Tensor]:
    """A seeded Mask R-CNN-like output for ``image``: 100 detections (most objects found, with jittered
    boxes and some wrong labels, the rest random) with rectangular 0/1 masks pasted into the image (a view
    of ``buffer``, 100x1x640x640 uint8, overwritten), and 1000 proposals (jittered objects among random
    boxes), as the model gives them."""
    rng = np.random.default_rng(image["id"])
    height, width = image["height"], image["width"]
    found = [obj for obj in objects if rng.random() < 0.8][:DETECTIONS]
    gt_boxes = xywh_to_xyxy(np.array([obj["bbox"] for obj in found]).reshape(-1, 4))
    gt_boxes += rng.normal(0, 0.05, gt_boxes.shape) * (gt_boxes[:, 2:] - gt_boxes[:, :2]).repeat(2, axis=1)
    corners = rng.uniform(0, 1, (DETECTIONS - len(found), 2)) * [width - 20, height - 20]
    random_boxes = np.concatenate([corners, corners + rng.uniform(8, 200, corners.shape)], axis=1)
    boxes = (
        np.concatenate([gt_boxes, random_boxes]).clip(0, [width, height, width, height]).astype(np.float32)
    )
    labels = rng.integers(1, len(CATEGORY_IDS) + 1, DETECTIONS)
    category_to_label = {category_id: label for label, category_id in LABEL_TO_CATEGORY_ID.items()}
    for index, obj in enumerate(found):
        if rng.random() < 0.85:
            labels[index] = category_to_label[obj["category_id"]]
    scores = np.concatenate([rng.uniform(0.3, 1.0, len(found)), rng.uniform(0.0, 0.6, len(random_boxes))])
    masks = buffer[:, :, :height, :width]
    masks.zero_()
    for index, (x1, y1, x2, y2) in enumerate(boxes.round().astype(int).tolist()):
        masks[index, 0, y1 : max(y2, y1 + 1), x1 : max(x2, x1 + 1)] = 1
    corners = rng.uniform(0, 1, (PROPOSALS, 2)) * [width - 10, height - 10]
    proposals = np.concatenate([corners, corners + rng.uniform(4, 300, corners.shape)], axis=1)
    for box in gt_boxes:
        proposals[rng.integers(0, PROPOSALS, 3)] = box + rng.normal(0, 2, 4)
    return {
        "boxes": torch.from_numpy(boxes),
        "scores": torch.from_numpy(scores.astype(np.float32)),
        "labels": torch.from_numpy(labels),
        "masks": masks,
        "proposals": torch.from_numpy(proposals.clip(0, [width, height, width, height]).astype(np.float32)),
    }


class AllGatherEvaluator:
    """The evaluation before the rank-0 gathering, for comparison: each image's detections (``bbox`` and
    ``segmentation``) and proposals kept as COCO record dicts, all-gathered to every rank, and scored by
    every rank (proposal recall in one COCOeval)."""

    def __init__(self, ground_truth: Mapping, label_to_category_id: Mapping[int, int]) -> None:
        self.label_to_category_id = dict(label_to_category_id)
        dataset = copy.deepcopy(dict(ground_truth))
        self.coco_gt = COCO(dataset)
        self.records: dict[int, tuple[list[dict], list[dict]]] = {}

    def update(self, predictions: Sequence[Mapping[str, torch.Tensor]], image_ids: Sequence[int]) -> None:
        """Keep each image's detection and proposal records."""
        for prediction, image_id in zip(predictions, image_ids, strict=True):
            compact = ImageResults.from_prediction(prediction, self.label_to_category_id, True, PROPOSALS)
            boxes, masks = compact.records(image_id, "bbox"), compact.records(image_id, "segm")
            detections = [{**box, "segmentation": mask["segmentation"]} for box, mask in zip(boxes, masks)]
            self.records[image_id] = (detections, compact.records(image_id, "rpn"))

    def compute(self) -> dict[str, float]:
        """All-gather every rank's records, then score all images on this rank."""
        merged: dict[int, tuple[list[dict], list[dict]]] = {}
        for part in all_gather_object(self.records):
            merged.update(part)
        self.records = merged
        image_ids = sorted(merged)
        keys = ("image_id", "category_id", "score")
        detections = [record for image_id in image_ids for record in merged[image_id][0]]
        boxes = [{**{k: r[k] for k in keys}, "bbox": list(r["bbox"])} for r in detections]
        metrics = detection_metrics(self.coco_gt, boxes, "bbox", image_ids)
        del boxes
        masks = [{**{k: r[k] for k in keys}, "segmentation": dict(r["segmentation"])} for r in detections]
        metrics.update(detection_metrics(self.coco_gt, masks, "segm", image_ids))
        del masks
        proposals = [
            {**record, "bbox": list(record["bbox"])}
            for image_id in image_ids
            for record in merged[image_id][1]
        ]
        metrics.update(proposal_recall(self.coco_gt, proposals, image_ids))
        return metrics


def memory_kib(field: str) -> int:
    """``VmRSS`` (resident) or ``VmHWM`` (peak resident) of this process, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def run_rank(rank: int, world_size: int, path: str, gt: dict, out_dir: Path) -> None:
    """One rank: evaluate its shard with ``path``'s evaluator, write its memory, times and metrics."""
    torch.set_num_threads(1)  # OpenMP thread pools do not survive fork; and one core per rank
    # Buffers of 2 MiB and more (the masks binarised per image) are mapped and unmapped, not carved out of
    # glibc's heap, where small long-lived blocks between them would leave it fragmented and growing: the
    # measure is then the evaluator's memory, not the allocator's (same for both paths).
    ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 2 << 20)
    dist.init_process_group(
        "gloo", init_method=f"file://{out_dir / 'init'}", rank=rank, world_size=world_size
    )
    try:
        objects: dict[int, list[dict]] = {image["id"]: [] for image in gt["images"]}
        for annotation in gt["annotations"]:
            objects[annotation["image_id"]].append(annotation)
        masks = torch.zeros(DETECTIONS, 1, 640, 640)  # the model's output buffer
        dist.barrier()
        baseline = memory_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident memory
        start = time.perf_counter()
        if path in ("rank0", "mid_run"):
            proposals = path == "rank0"
            evaluator = CocoEvaluator(gt, LABEL_TO_CATEGORY_ID, IOU_TYPES, evaluate_proposals=proposals)
        else:
            evaluator = AllGatherEvaluator(gt, LABEL_TO_CATEGORY_ID)
        for index in InferenceSampler(len(gt["images"]), rank, world_size):
            image = gt["images"][index]
            evaluator.update([prediction_of(image, objects[image["id"]], masks)], [image["id"]])
        dist.barrier()
        compute_start = time.perf_counter()
        metrics = evaluator.compute()
        end = time.perf_counter()
        result = {
            "peak_rss_mb": (memory_kib("VmHWM") - baseline) / 1024,
            "seconds": end - start,
            "compute_seconds": end - compute_start,
            "metrics": metrics,
        }
        (out_dir / f"{path}-rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def benchmark(gt: dict, path: str, world_size: int) -> dict:
    """Run ``path`` (``rank0``, ``mid_run`` or ``all_gather``) on ``world_size`` forked ranks; return rank 0's
    and the largest other peak memory (MB above baseline), the slowest rank's times and rank 0's metrics."""
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp)
        start_processes(
            run_rank, args=(world_size, path, gt, out_dir), nprocs=world_size, start_method="fork"
        )
        ranks = [json.loads((out_dir / f"{path}-rank{rank}.json").read_text()) for rank in range(world_size)]
    if any(rank["metrics"] != ranks[0]["metrics"] for rank in ranks):
        raise RuntimeError(f"{path}: ranks report different metrics")
    return {
        "peak_rss_mb_rank0": round(ranks[0]["peak_rss_mb"], 1),
        "peak_rss_mb_other": round(max(rank["peak_rss_mb"] for rank in ranks[1:]), 1),
        "seconds": round(max(rank["seconds"] for rank in ranks), 2),
        "compute_seconds": round(max(rank["compute_seconds"] for rank in ranks), 2),
        "metrics": ranks[0]["metrics"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000, help="simulated images (COCO val: 5000)")
    parser.add_argument("--ranks", type=int, default=2, help="gloo processes (at least 2)")
    parser.add_argument(
        "--paths", nargs="+", choices=PATHS, default=list(PATHS), help="evaluation paths to measure"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    if args.ranks < 2:
        parser.error("--ranks must be at least 2")
    gt = coco_like_ground_truth(args.images)
    paths = {path: benchmark(gt, path, args.ranks) for path in args.paths}
    metrics = [result.pop("metrics") for result in paths.values()]
    shared = set.intersection(*(set(m) for m in metrics))  # mid_run has no proposal recall
    same = len({json.dumps({k: m[k] for k in sorted(shared)}) for m in metrics}) == 1
    result = {"images": args.images, "ranks": args.ranks, **paths, "same_metrics": same}
    result["bbox_AP"] = metrics[0]["bbox/AP"]
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.images} images on {args.ranks} gloo ranks; same metrics: {result['same_metrics']}")
    print(f"{'path':<12}{'rank 0 MB':>12}{'other MB':>12}{'seconds':>10}{'compute s':>11}")
    for path in paths:
        row = result[path]
        print(
            f"{path:<12}{row['peak_rss_mb_rank0']:>12}{row['peak_rss_mb_other']:>12}"
            f"{row['seconds']:>10}{row['compute_seconds']:>11}"
        )


if __name__ == "__main__":
    main()
