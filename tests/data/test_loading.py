"""Transforms (resize rules, flip consistency), DDP-aware samplers and the Hydra data configs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from datnet.contract import unpack_masks
from datnet.data.aux_targets import aux_targets, dense_aux_targets
from datnet.data.datamodule import ShapesDataModule
from datnet.data.instance_masks import InstanceMasks
from datnet.data.rasterise import rasterise
from datnet.data.records import Instance
from datnet.data.samplers import InferenceSampler, aspect_ratio_groups, training_batch_sampler
from datnet.data.transforms import AugmentConfig, apply_transforms, build_transforms

CONF = Path(__file__).resolve().parents[2] / "conf" / "data"


def unpack(masks: InstanceMasks) -> np.ndarray:
    """The uint8 NxHxW masks, through the bit-packed form that loader workers send."""
    return unpack_masks(torch.from_numpy(masks.packed()), masks.width).numpy()


def sample(height: int = 60, width: int = 100):
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = 200  # bright left half
    masks = np.zeros((2, height, width), np.uint8)
    masks[0, 10:30, 8:40] = 1
    masks[1, 20:50, 60:96] = 1
    boxes = np.array([[8, 10, 40, 30], [60, 20, 96, 50]], np.float32)
    instances = [Instance(k, tuple(b), 1) for k, b in enumerate(boxes.tolist())]  # box-only: filled boxes
    return image, masks, boxes, instances


@pytest.mark.parametrize(("size", "expected"), [((600, 800), (800, 1067)), ((480, 1600), (400, 1333))])
def test_eval_resize_short_side_and_long_cap(size, expected):
    image = np.zeros((*size, 3), np.uint8)
    out = apply_transforms(build_transforms(AugmentConfig(), train=False), image, np.zeros((0, 4)))
    assert out.image.shape[:2] == expected and not out.flipped


def test_multiscale_draws_short_sides_from_the_range():
    cfg = AugmentConfig(
        multiscale=True, multiscale_range=(400, 1200), multiscale_max_size=1400, color_jitter=0
    )
    t = build_transforms(cfg, train=True)
    t.set_random_seed(0)
    shorts = set()
    for _ in range(30):
        out = apply_transforms(t, np.zeros((300, 400, 3), np.uint8), np.zeros((0, 4))).image
        assert 400 <= min(out.shape[:2]) <= 1200 and max(out.shape[:2]) <= 1400
        shorts.add(min(out.shape[:2]))
    assert len(shorts) > 10


def test_flip_and_resize_move_image_masks_boxes_and_targets_together():
    image, masks, boxes, instances = sample()
    cfg = AugmentConfig(min_size=120, max_size=400, hflip_prob=1.0, color_jitter=0)
    out = apply_transforms(build_transforms(cfg, train=True), image, boxes)
    out_masks = rasterise(instances, image.shape[:2], out.image.shape[:2], out.flipped)
    assert out.image.shape[:2] == (120, 200) and out.flipped and out.keep.tolist() == [0, 1]
    expected = np.stack([np.repeat(np.repeat(m[:, ::-1], 2, 0), 2, 1) for m in masks])
    assert np.array_equal(unpack(out_masks), expected)
    assert out.image[:, :90].max() == 0 and out.image[:, 110:].min() == 200  # the image is flipped too
    np.testing.assert_allclose(out.boxes, [[120, 20, 184, 60], [8, 40, 80, 100]], atol=1e-3)
    for box, m in zip(out.boxes, expected, strict=True):
        ys, xs = np.nonzero(m)
        np.testing.assert_allclose(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=1e-3)
    empty = InstanceMasks(120, 200)
    dt, _ = aux_targets(out_masks, np.array([1, 2]), empty)
    ref, _ = dense_aux_targets(expected, np.array([1, 2]), np.zeros((0, 120, 200), np.uint8))
    assert np.array_equal(dt, ref) and dt.shape == (30, 50)


def test_grouped_batches_are_rank_sharded_equal_length_and_reshuffled_per_epoch():
    ratios = np.r_[np.full(37, 1.5), np.full(23, 0.7)]
    groups = aspect_ratio_groups(ratios, 3)
    per_rank = [training_batch_sampler(ratios, 4, 3, rank, 3, seed=1) for rank in range(3)]
    batches = [list(s) for s in per_rank]
    assert len({len(b) for b in batches}) == 1 and len(batches[0]) == len(per_rank[0]) == 20 // 4
    seen = set()
    for rank_batches in batches:
        for batch in rank_batches:
            assert len(batch) == 4 and len({groups[i] for i in batch}) == 1
            seen.update(batch)
    assert len(seen) >= 50
    first = [list(b) for b in per_rank[0]]
    per_rank[0].sampler.set_epoch(1)
    assert [list(b) for b in per_rank[0]] != first


def test_inference_sampler_visits_every_index_exactly_once():
    for size, world in ((10, 3), (2, 4), (7, 1)):
        shards = [list(InferenceSampler(size, r, world)) for r in range(world)]
        assert sum(shards, []) == list(range(size))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.mark.parametrize("name", ["coco", "voc", "pennfudan", "voc_instseg", "shapes"])
def test_hydra_configs_have_the_user_keys(name):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    for key in ("_target_", "root", "batch_size", "num_workers", "min_size", "max_size", "multiscale"):
        assert key in cfg, f"{name}.yaml lacks {key}"
    assert "${paths.data_dir}" in OmegaConf.to_yaml(cfg)
    assert cfg.num_workers >= 4 if name in ("coco", "voc") else cfg.num_workers == 2  # GPU-sized / CPU data
    assert cfg.pin_memory == "auto"
    assert cfg.val_batch_size == (4 if name == "shapes" else 1)  # shapes: CPU speed, said in its comment


def test_loaders_pin_memory_for_cuda_and_keep_training_workers(tmp_path, monkeypatch):
    """pin_memory="auto" pins exactly when batches go to a CUDA device; training workers are persistent."""
    dm = ShapesDataModule(tmp_path / "s", num_train=4, num_val=2, num_workers=2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    train, val = dm.train_dataloader(), dm.val_dataloader()
    assert train.pin_memory and val.pin_memory
    assert train.persistent_workers and not val.persistent_workers
    dm.trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device("cpu")), global_rank=0, world_size=1
    )
    assert not dm.train_dataloader().pin_memory  # a CPU trainer on a CUDA machine
    dm.trainer = None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not dm.train_dataloader().pin_memory
    dm.pin_memory, dm.num_workers = True, 0
    loader = dm.train_dataloader()
    assert loader.pin_memory and not loader.persistent_workers
    with pytest.raises(ValueError, match="pin_memory must be"):
        ShapesDataModule(tmp_path / "s", num_train=4, num_val=2, pin_memory="yes")


def test_shapes_config_instantiates_with_paths_data_dir(tmp_path):
    cfg = OmegaConf.create(
        {"paths": {"data_dir": str(tmp_path)}, "data": OmegaConf.load(CONF / "shapes.yaml")}
    )
    cfg.data.num_train, cfg.data.num_val, cfg.data.num_workers = 4, 2, 0
    dm = instantiate(cfg.data)
    assert dm.num_classes == 4 and (tmp_path / "shapes" / "annotations" / "instances_val2017.json").exists()
    images, targets, skipped = next(iter(dm.val_dataloader()))
    assert len(images) == 2 and skipped == [] and min(images[0].shape[1:]) == cfg.data.min_size
