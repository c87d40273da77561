"""Loader benchmark on real COCO images (shared/data/tiny_coco) at the paper's training settings (colour
jitter, flip, short side 800), on one core; optionally beside a baseline commit's loader in the same run.

Measures:

* `ms_per_image_total`: the whole `__getitem__` (decode, jitter/flip/resize, masks, aux targets at
  `--aux-stride`, tensors), wall-clock, mean over `--repeats` passes over the split, torch/OpenCV on one
  thread, no loader workers (`cpu_ms_per_image_total`: the process's CPU time, which other processes on a
  shared machine change less than the wall-clock time). Each loader runs in its own process
  (`dataset_server.py`), seeded alike, so both see the same augmentations.
* `stages_ms`: one pass under cProfile, milliseconds per image in each function that `__getitem__` calls
  (the profiler inflates Python-heavy stages; for the shares).
* `ms_per_image_aux_s{s}`: the dense auxiliary targets of Sec. 3.1 alone at each stride of `--aux-strides` on
  the masks of the resized image (s1: the pixel-level targets of the paper's image-resolution loss; s4: the
  same sampled at the stride-4 cells; CPU time, each image's best of `--repeats`, mean and maximum).
* `mb_per_sample`: the size of a sample as a loader worker sends it (uint8 image, bit-packed masks, uint8
  `dt`/`sem`; MB of 10^6 bytes), mean and maximum; `mb_per_sample_float32_dense` the same with a float32 image
  and uint8 NxHxW masks.

`--baseline-ref REF` also runs the loader of commit REF (its `src/`, extracted with `git archive` into a
temporary directory) in a second process; the two alternate pass by pass (the order flips every round) so
that the machine's load falls on both. It adds the baseline's times and stages, `ratio` (new / baseline wall
time) and `agreement`, item by item with the same seed: images and boxes bit-identical, the `dt`/`sem` maps'
pixel agreement (pooled and the worst image) and each instance mask's IoU.

    .venv/bin/python scripts/bench/bench_data.py [--root DIR] [--split train] [--repeats 3] [--aux-stride 1]
        [--baseline-ref HEAD] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from datnet.configs import PROJECT_ROOT, shared_data_root
from datnet.data.aux_targets import aux_targets
from datnet.data.coco import load_coco
from datnet.data.dataset import DetectionDataset
from datnet.data.instance_masks import InstanceMasks
from datnet.data.rasterise import rasterise
from datnet.data.transforms import AugmentConfig, apply_transforms, build_transforms

DEFAULT_ROOT = shared_data_root()
SERVER = Path(__file__).with_name("dataset_server.py")


class DatasetServer:
    """A `dataset_server.py` process importing `datnet` from `src`; calling it sends one request."""

    def __init__(self, src: Path, root: Path, split: str, aux_stride: int) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
        self.process = subprocess.Popen(
            [sys.executable, str(SERVER), str(root), split, str(aux_stride)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )

    def __call__(self, cmd: str, **kwargs: Any) -> Any:
        pickle.dump({"cmd": cmd, **kwargs}, self.process.stdin)
        self.process.stdin.flush()
        try:
            return pickle.load(self.process.stdout)
        except EOFError as e:
            raise RuntimeError(f"{SERVER.name} exited with {self.process.wait()} on '{cmd}'") from e

    def close(self) -> None:
        pickle.dump({"cmd": "exit"}, self.process.stdin)
        self.process.stdin.close()
        self.process.wait()


def extract_src(ref: str, into: Path) -> Path:
    """The `src/` tree of commit `ref` of this repository, written under `into`."""
    done = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "archive", "--format=tar", ref, "src"], capture_output=True
    )
    if done.returncode:
        raise SystemExit(f"--baseline-ref {ref}: git archive failed: {done.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as archive:
        archive.extractall(into, filter="data")
    return into / "src"


def alternating_passes(servers: dict[str, DatasetServer], repeats: int) -> dict[str, list[dict[str, float]]]:
    """`repeats` timed passes of each server after a warm-up pass, taking turns (the order flips each
    round)."""
    names = list(servers)
    for name in names:
        servers[name]("pass", seed=0)
    passes: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            passes[name].append(servers[name]("pass", seed=r))
    return passes


def unpacked_masks(sample: dict[str, np.ndarray]) -> np.ndarray:
    """The NxHxW {0, 1} masks of a served sample."""
    return np.unpackbits(sample["masks_packed"], axis=-1)[..., : sample["image"].shape[-1]]


def agreement(baseline: DatasetServer, new: DatasetServer, count: int) -> dict[str, Any]:
    """Items of both loaders with the same seed, compared (module docstring)."""
    images = boxes = labels = aux_equal = aux_total = 0
    dt_equal = sem_equal = 0
    worst, ious = 1.0, []
    for i in range(count):
        a, b = baseline("sample", index=i, seed=i), new("sample", index=i, seed=i)
        images += np.array_equal(a["image"], b["image"])
        boxes += np.array_equal(a["boxes"], b["boxes"])
        labels += np.array_equal(a["labels"], b["labels"])
        same_dt, same_sem = a["dt"] == b["dt"], a["sem"] == b["sem"]
        dt_equal, sem_equal = dt_equal + same_dt.sum(), sem_equal + same_sem.sum()
        both = (same_dt & same_sem).sum()
        aux_equal, aux_total = aux_equal + both, aux_total + same_dt.size
        worst = min(worst, both / same_dt.size)
        ma, mb = unpacked_masks(a).astype(bool), unpacked_masks(b).astype(bool)
        if ma.shape == mb.shape:
            union = (ma | mb).sum(axis=(1, 2))
            ious += list((ma & mb).sum(axis=(1, 2))[union > 0] / union[union > 0])
    return {
        "items": count,
        "images_identical": int(images),
        "boxes_identical": int(boxes),
        "labels_identical": int(labels),
        "aux_pixels": int(aux_total),
        "aux_agreement": round(float(aux_equal / aux_total), 5),
        "aux_agreement_worst_item": round(float(worst), 5),
        "dt_agreement": round(float(dt_equal / aux_total), 5),
        "sem_agreement": round(float(sem_equal / aux_total), 5),
        "mask_iou_mean": round(float(np.mean(ious)), 4) if ious else None,
        "mask_iou_min": round(float(np.min(ious)), 4) if ious else None,
    }


def sample_mb(sample: dict[str, np.ndarray]) -> tuple[float, float]:
    """MB of a served sample's tensors as sent (uint8 image, `masks_packed`) and as they would be with a
    float32 image and uint8 NxHxW masks instead."""
    image, packed = sample["image"], sample["masks_packed"]
    sent = sum(v.nbytes for v in sample.values())
    dense = (
        sent - image.nbytes + 4 * image.size - packed.nbytes + len(packed) * image.shape[-2] * image.shape[-1]
    )
    return sent / 1e6, dense / 1e6


def aux_inputs(dataset: DetectionDataset) -> list[tuple[InstanceMasks, np.ndarray, InstanceMasks]]:
    """The (instance masks, labels, ignore masks) of each image at the evaluation resize (short side 800)."""
    resize = build_transforms(AugmentConfig(), train=False)
    inputs = []
    for rec in dataset.records:
        objects = [i for i in rec.instances if not dataset.is_ignore_region(i)]
        instances = objects + [i for i in rec.instances if dataset.is_ignore_region(i)]
        boxes = np.array([i.bbox for i in instances], np.float32).reshape(-1, 4)
        out = apply_transforms(resize, np.zeros((rec.height, rec.width, 3), np.uint8), boxes)
        masks = rasterise(
            [instances[k] for k in out.keep], (rec.height, rec.width), out.image.shape[:2], False
        )
        is_object = out.keep < len(objects)
        inputs.append((masks.select(is_object), np.ones(is_object.sum(), np.int64), masks.select(~is_object)))
    return inputs


def aux_target_ms(inputs: list[tuple[InstanceMasks, np.ndarray, InstanceMasks]], stride: int, repeats: int):
    """CPU milliseconds of `aux_targets` at `stride` for each input, the best of `repeats` runs (the process's
    CPU time, one thread)."""
    times = np.full(len(inputs), np.inf)
    for _ in range(repeats):
        for k, (masks, labels, ignore) in enumerate(inputs):
            start = time.process_time()
            aux_targets(masks, labels, ignore, stride)
            times[k] = min(times[k], (time.process_time() - start) * 1000)
    return times


def path_summary(passes: list[dict[str, float]], stages: dict[str, float]) -> dict[str, Any]:
    return {
        "ms_per_image_total": round(float(np.mean([p["wall_ms"] for p in passes])), 2),
        "cpu_ms_per_image_total": round(float(np.mean([p["cpu_ms"] for p in passes])), 2),
        "passes_ms": [round(p["wall_ms"], 2) for p in passes],
        "stages_ms": {k: round(v, 2) for k, v in sorted(stages.items(), key=lambda kv: -kv[1]) if v >= 0.05},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT / "tiny_coco", help="COCO-format directory")
    parser.add_argument("--split", default="val")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the split per loader")
    parser.add_argument("--aux-strides", type=int, nargs="+", default=[1, 4], help="aux targets timed alone")
    parser.add_argument("--aux-stride", type=int, default=1, help="the dataset's (data.aux_stride)")
    parser.add_argument("--baseline-ref", help="also run this commit's loader, alternating with this one")
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        sources = {"new": PROJECT_ROOT / "src"}
        if args.baseline_ref:
            sources["baseline"] = extract_src(args.baseline_ref, Path(tmp))
        servers = {
            name: DatasetServer(src, args.root, args.split, args.aux_stride) for name, src in sources.items()
        }
        try:
            count = servers["new"]("info")["images"]
            passes = alternating_passes(servers, args.repeats)
            paths = {name: path_summary(passes[name], s("profile", seed=0)) for name, s in servers.items()}
            sizes = np.array([sample_mb(servers["new"]("sample", index=i, seed=i)) for i in range(count)])
            agree = agreement(servers["baseline"], servers["new"], count) if args.baseline_ref else None
            packages = {name: s("info")["package"] for name, s in servers.items()}
        finally:
            for server in servers.values():
                server.close()

    source = load_coco(
        args.root / "annotations" / f"instances_{args.split}2017.json", args.root / f"{args.split}2017"
    )
    inputs = aux_inputs(DetectionDataset(source, build_transforms(AugmentConfig(), train=False)))
    aux_ms = {stride: aux_target_ms(inputs, stride, args.repeats) for stride in args.aux_strides}
    result: dict[str, Any] = {
        **{f"ms_per_image_aux_s{stride}": round(float(ms.mean()), 2) for stride, ms in aux_ms.items()},
        **{f"ms_per_image_aux_s{stride}_max": round(float(ms.max()), 2) for stride, ms in aux_ms.items()},
        "aux_stride": args.aux_stride,
        "split": args.split,
        "images": count,
        **paths["new"],
        "mb_per_sample": round(float(sizes[:, 0].mean()), 2),
        "mb_per_sample_max": round(float(sizes[:, 0].max()), 2),
        "mb_per_sample_float32_dense": round(float(sizes[:, 1].mean()), 2),
        "mb_per_sample_float32_dense_max": round(float(sizes[:, 1].max()), 2),
    }
    if args.baseline_ref:
        result["baseline"] = {"ref": args.baseline_ref, "package": packages["baseline"], **paths["baseline"]}
        result["ratio"] = round(
            paths["new"]["ms_per_image_total"] / paths["baseline"]["ms_per_image_total"], 3
        )
        result["agreement"] = agree
    if args.json:
        print(json.dumps(result))
        return
    print(f"{count} images of {args.root} ({args.split}), training augmentation, short side 800")
    for name, path in paths.items():
        print(
            f"{name} ({packages[name]}): whole __getitem__ {path['ms_per_image_total']:.2f} ms/image wall, "
            f"{path['cpu_ms_per_image_total']:.2f} CPU (passes {path['passes_ms']})"
        )
        print("  stages (cProfile, ms/image): " + ", ".join(f"{k} {v}" for k, v in path["stages_ms"].items()))
    if agree:
        print(f"new / baseline: {result['ratio']}; agreement: {json.dumps(agree)}")
    for stride, ms in aux_ms.items():
        print(f"aux targets alone (stride {stride}): {ms.mean():.2f} ms/image mean, {ms.max():.2f} max")
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
