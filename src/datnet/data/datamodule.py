"""Lightning data modules, one per source (Hydra configs in conf/data/), all producing the sample contract of
`datnet.data.dataset` with the auxiliary targets of paper Sec. 3.1 computed in the loader workers.

Every module exposes `num_classes` (with background), `class_names` (index 0 = "__background__"),
`label_to_category_id` (contiguous label -> original dataset category id), `coco_gt(split)` (COCO-format
ground truth with original ids and sizes) and the three dataloaders, whose batches are
`(images, targets, skipped)` (see `collate`). The trainer must run with `use_distributed_sampler=False`: the
training loader shards by rank itself and groups batches by aspect ratio, and the val/test loaders give each
rank a contiguous shard so that every image is evaluated exactly once.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import pytorch_lightning as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, get_worker_info

from datnet.contract import check_stride
from datnet.data.coco import load_coco
from datnet.data.coco_gt import records_to_coco
from datnet.data.dataset import DetectionDataset, collate
from datnet.data.instance_png import load_pennfudan, load_voc_instseg
from datnet.data.records import Category, SourceData, require_path
from datnet.data.samplers import InferenceSampler, ResumableLoader, training_batch_sampler
from datnet.data.shapes import ensure_shapes
from datnet.data.transforms import AugmentConfig, build_transforms
from datnet.data.voc import VOC_CLASSES, load_voc

SPLITS = ("train", "val", "test")


def _init_worker(worker_id: int, rank: int) -> None:
    """Give each loader worker (and rank) its own augmentation stream, and run OpenCV on the worker's own
    thread: the workers are the parallelism (torch already gives each one thread), and OpenCV's default pool
    of one thread per core in every worker would oversubscribe the cores.

    `cv2.setNumThreads(0)` (sequential; `getNumThreads()` then says 1), not 1: 1 joins the pool's threads,
    and a pool that the parent process started before the fork has no threads in the worker to join, so the
    worker would hang. 0 leaves the pool alone and stops OpenCV from using it.
    """
    cv2.setNumThreads(0)
    info = get_worker_info()
    info.dataset.transforms.set_random_seed((info.seed + 1_000_003 * rank) % 2**32)


class DetectionDataModule(pl.LightningDataModule):
    """Source-independent part: transforms, datasets, samplers, loaders, label space and COCO ground truth.

    Subclasses implement `_parse(split)`, returning the split's `SourceData` or None when it is not configured
    (the test split then falls back to val). The label space is the category list of the first configured
    split among train, val, test; the other splits use it too (unknown categories there are counted).

    Args:
        batch_size: training images per batch and per rank.
        val_batch_size: evaluation images per batch and per rank.
        num_workers: loader worker processes per rank (aux targets are computed there); the training loader's
            workers are persistent (kept across epochs) when there are any.
        min_size, max_size: short side / long-side cap of the resize (Sec. 4: 800 / 1333).
        multiscale: draw the training short side from `multiscale_range`, long side <= `multiscale_max_size`.
        hflip_prob, color_jitter: training augmentation strengths (0 disables).
        aspect_ratio_group_factor: aspect-ratio groups of the training batches (k of
            `samplers.aspect_ratio_groups`: k > 0 torchvision's 2k+1 bins, 0 maskrcnn-benchmark's landscape /
            portrait, -1 no grouping).
        remove_images_without_annotations: leave the training images without any annotation out, counted
            (maskrcnn-benchmark, torchvision references); evaluation splits keep every image.
        aux_stride: stride of the dense auxiliary targets; the configs set it to `model.aux.loss_stride`
            (1: per pixel, the paper; 4: the heads' P2 grid).
        aux_image_border_is_boundary: the DT target's image-border rule (`aux_targets`); the configs set it
            to `model.aux.image_border_is_boundary`.
        seed: shuffling seed (the epoch is added by `set_epoch`).
        pin_memory: DataLoader pin_memory (page-locked batches for fast, asynchronous copies to a GPU): True,
            False, or "auto": True when the batches go to a CUDA device (the trainer's root device; without a
            trainer, when CUDA is available).
    """

    def __init__(
        self,
        batch_size: int = 2,
        val_batch_size: int = 1,
        num_workers: int = 2,
        min_size: int = 800,
        max_size: int = 1333,
        multiscale: bool = False,
        multiscale_range: Sequence[int] = (400, 1200),
        multiscale_max_size: int = 1400,
        hflip_prob: float = 0.5,
        color_jitter: float = 0.4,
        aspect_ratio_group_factor: int = 3,
        aux_stride: int = 4,
        aux_image_border_is_boundary: bool = True,
        seed: int = 0,
        pin_memory: bool | str = "auto",
        remove_images_without_annotations: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(pin_memory, bool) and pin_memory != "auto":
            raise ValueError(f"pin_memory must be true, false or 'auto', got {pin_memory!r}")
        lo, hi = (int(v) for v in multiscale_range)
        self.augment = AugmentConfig(
            min_size, max_size, multiscale, (lo, hi), multiscale_max_size, hflip_prob, color_jitter
        )
        self.batch_size, self.val_batch_size, self.num_workers = batch_size, val_batch_size, num_workers
        check_stride(aux_stride, "data.aux_stride")
        self.aspect_ratio_group_factor, self.aux_stride = aspect_ratio_group_factor, aux_stride
        self.aux_image_border_is_boundary = aux_image_border_is_boundary
        self.seed, self.pin_memory = seed, pin_memory
        self.remove_images_without_annotations = remove_images_without_annotations
        self._sources: dict[str, SourceData | None] = {}
        self._datasets: dict[str, DetectionDataset] = {}

    use_difficult: bool = False  # VOC options; other sources have no difficult objects
    difficult_as_crowd: bool = True

    def _parse(self, split: str) -> SourceData | None:
        raise NotImplementedError

    # --- label space ----------------------------------------------------------------------------------------
    def _source(self, split: str) -> SourceData | None:
        if split not in self._sources:
            self._sources[split] = self._parse(split)
        return self._sources[split]

    @functools.cached_property
    def categories(self) -> list[Category]:
        """Categories of the label space, in label order (label k = categories[k - 1])."""
        for split in SPLITS:
            source = self._source(split)
            if source is not None:
                return list(source.categories)
        raise ValueError(f"{type(self).__name__}: no split is configured")

    @property
    def num_classes(self) -> int:
        """Number of classes including the background."""
        return len(self.categories) + 1

    @property
    def class_names(self) -> list[str]:
        return ["__background__"] + [c.name for c in self.categories]

    @property
    def label_to_category_id(self) -> dict[int, int]:
        """Contiguous label (1..C) -> original dataset category id, for result files and evaluation."""
        return {k + 1: c.id for k, c in enumerate(self.categories)}

    # --- datasets -------------------------------------------------------------------------------------------
    def dataset(self, split: str) -> DetectionDataset:
        """The dataset of `split` ('train', 'val' or 'test'; test falls back to val when not configured)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split '{split}', expected one of {SPLITS}")
        if split not in self._datasets:
            source = self._source(split)
            if source is None and split == "test":
                self._datasets[split] = self.dataset("val")
                return self._datasets[split]
            if source is None:
                raise ValueError(f"{type(self).__name__}: split '{split}' is not configured")
            if split == "train" and not source.annotated:
                raise ValueError(f"{type(self).__name__}: the train split has no 'annotations'")
            self._datasets[split] = DetectionDataset(
                source,
                build_transforms(self.augment, train=split == "train"),
                categories=self.categories,
                aux_stride=self.aux_stride,
                aux_image_border_is_boundary=self.aux_image_border_is_boundary,
                use_difficult=self.use_difficult,
                remove_images_without_annotations=split == "train" and self.remove_images_without_annotations,
            )
        return self._datasets[split]

    def setup(self, stage: str | None = None) -> None:
        """Parse the configured splits that the stage needs (all of them when `stage` is None)."""
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in wanted.get(stage or "", SPLITS):
            if split == "test" or self._source(split) is not None:
                self.dataset(split)

    def coco_gt(self, split: str) -> dict[str, Any]:
        """COCO-format ground truth of `split` (original image/category ids and sizes) for COCO evaluation.
        A split without annotations (test-dev image-info file) gives images and categories only: enough to
        write result files, nothing to score."""
        ds = self.dataset(split)
        gt = records_to_coco(ds.records, self.categories, self.difficult_as_crowd)
        if not ds.annotated:
            del gt["annotations"]
        return gt

    # --- loaders --------------------------------------------------------------------------------------------
    def _rank_world(self) -> tuple[int, int]:
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _pin_memory(self) -> bool:
        """`pin_memory` with "auto" resolved (see the class docstring)."""
        if self.pin_memory != "auto":
            return self.pin_memory
        if self.trainer is not None:
            return self.trainer.strategy.root_device.type == "cuda"
        return torch.cuda.is_available()

    def _loader(self, split: str, batch_sampler: BatchSampler, rank: int) -> DataLoader:
        """The split's loader; the training one keeps its position in the epoch in checkpoints
        (`ResumableLoader`: a run resumed mid-epoch continues that epoch's batches)."""
        loader = ResumableLoader if split == "train" else DataLoader
        return loader(
            self.dataset(split),
            batch_sampler=batch_sampler,
            num_workers=self.num_workers,
            collate_fn=collate,
            worker_init_fn=functools.partial(_init_worker, rank=rank) if self.num_workers else None,
            persistent_workers=self.num_workers > 0 and split == "train",
            pin_memory=self._pin_memory(),
        )

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank_world()
        ds = self.dataset("train")
        sampler = training_batch_sampler(
            ds.aspect_ratios(), self.batch_size, self.aspect_ratio_group_factor, rank, world, self.seed
        )
        return self._loader("train", sampler, rank)

    def _eval_loader(self, split: str) -> DataLoader:
        rank, world = self._rank_world()
        shard = InferenceSampler(len(self.dataset(split)), rank, world)
        return self._loader(split, BatchSampler(shard, self.val_batch_size, drop_last=False), rank)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")


def _under(root: Path, path: str | None) -> Path | None:
    """`path` relative to `root` (absolute paths are kept); None stays None."""
    return None if path is None else root / path


class CocoDataModule(DetectionDataModule):
    """A standard COCO directory; every path is relative to `root` unless absolute.

    `test_ann_file` may be an image-info file without annotations (test-dev): the test split then yields
    images for result files only. Without `test_ann_file` the test split is the val split. `train_ann_file`
    may be None for evaluation-only use.
    """

    def __init__(
        self,
        root: str | Path,
        train_ann_file: str | None = "annotations/instances_train2017.json",
        train_img_dir: str | None = "train2017",
        val_ann_file: str | None = "annotations/instances_val2017.json",
        val_img_dir: str | None = "val2017",
        test_ann_file: str | None = None,
        test_img_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = require_path(
            Path(root),
            "COCO root",
            "expected: annotations/instances_{train,val}2017.json, train2017/, val2017/ under it; "
            "set data.root or DATNET_DATA_DIR; see docs/datasets.md",
        )
        self.files: dict[str, tuple[Path, Path] | None] = {}
        for split, ann, img in (
            ("train", train_ann_file, train_img_dir),
            ("val", val_ann_file, val_img_dir),
            ("test", test_ann_file, test_img_dir),
        ):
            if ann is None:
                self.files[split] = None
                continue
            if img is None:
                raise ValueError(f"{split}_img_dir must be set when {split}_ann_file is ({ann})")
            ann_path, img_path = _under(self.root, ann), _under(self.root, img)
            self.files[split] = (
                require_path(ann_path, "annotation file"),
                require_path(img_path, "image dir"),
            )

    def _parse(self, split: str) -> SourceData | None:
        files = self.files[split]
        return None if files is None else load_coco(*files, name=f"coco {split}")


class ShapesDataModule(CocoDataModule):
    """The embedded synthetic dataset (`datnet.data.shapes`), generated under `root` on first use."""

    def __init__(
        self,
        root: str | Path,
        num_train: int = 300,
        num_val: int = 60,
        generator_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        ensure_shapes(Path(root), num_train=num_train, num_val=num_val, seed=generator_seed)
        super().__init__(root, **kwargs)


class VocDataModule(DetectionDataModule):
    """Pascal VOC XML roots; each split is a list of [root, split-name] pairs (relative to `root`) that are
    concatenated, e.g. train_sets=[[VOC2007, trainval], [VOC2012, trainval]], val_sets=[[VOC2007, test]].

    Boxes become filled-box proxy masks (Sec. 4.4). `difficult` objects are ignore regions in training unless
    `use_difficult`, and iscrowd=1 (ignored) in the COCO ground truth unless `difficult_as_crowd` is False.
    """

    def __init__(
        self,
        root: str | Path,
        train_sets: Sequence[Sequence[str]] = (("VOC2007", "trainval"), ("VOC2012", "trainval")),
        val_sets: Sequence[Sequence[str]] = (("VOC2007", "test"),),
        test_sets: Sequence[Sequence[str]] | None = None,
        class_names: Sequence[str] = VOC_CLASSES,
        use_difficult: bool = False,
        difficult_as_crowd: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = require_path(Path(root), "VOC root")
        self.sets: dict[str, list[tuple[Path, str]] | None] = {
            split: None if sets is None else [(self.root / r, str(s)) for r, s in sets]
            for split, sets in (("train", train_sets), ("val", val_sets), ("test", test_sets))
        }
        for r, s in (pair for sets in self.sets.values() if sets for pair in sets):
            require_path(r / "ImageSets" / "Main" / f"{s}.txt", f"VOC split '{s}'")
        self.class_names_cfg = [str(n) for n in class_names]
        self.use_difficult, self.difficult_as_crowd = use_difficult, difficult_as_crowd

    def _parse(self, split: str) -> SourceData | None:
        sets = self.sets[split]
        return None if sets is None else load_voc(sets, self.class_names_cfg, name=f"voc {split}")


class PennFudanDataModule(DetectionDataModule):
    """Penn-Fudan pedestrians with PNG instance masks; val is a fixed seeded subset of `num_val` images."""

    def __init__(self, root: str | Path, num_val: int = 50, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = require_path(Path(root), "PennFudan root")
        self.num_val = num_val

    def _parse(self, split: str) -> SourceData | None:
        return (
            None
            if split == "test"
            else load_pennfudan(self.root, split, self.num_val, name=f"pennfudan {split}")
        )


class VocInstSegDataModule(DetectionDataModule):
    """VOC SegmentationObject/SegmentationClass instance masks. A split is the name of a file in
    ImageSets/Segmentation/ or 'all' (every PNG); None leaves it unconfigured."""

    def __init__(
        self,
        root: str | Path,
        train_split: str | None = "train",
        val_split: str | None = "val",
        class_names: Sequence[str] = VOC_CLASSES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = require_path(Path(root), "VOC root")
        self.splits = {"train": train_split, "val": val_split, "test": None}
        for s in (s for s in self.splits.values() if s not in (None, "all")):
            require_path(self.root / "ImageSets" / "Segmentation" / f"{s}.txt", f"split '{s}'")
        self.class_names_cfg = [str(n) for n in class_names]

    def _parse(self, split: str) -> SourceData | None:
        s = self.splits[split]
        return (
            None
            if s is None
            else load_voc_instseg(self.root, s, self.class_names_cfg, name=f"voc_instseg {split}")
        )
