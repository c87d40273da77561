"""docs/fidelity.md names real tests, and the settings where the paper is silent stay as it says."""

import re
from pathlib import Path

import albumentations as A
import torch
from torchvision.ops import roi_align

from datnet.configs import compose_config
from datnet.data.transforms import AugmentConfig, ShortSideResize, build_transforms
from datnet.models.build import build_pooler

REPO = Path(__file__).resolve().parents[2]


def test_every_test_named_in_the_ledger_exists():
    ledger = (REPO / "docs" / "fidelity.md").read_text()
    named = set(re.findall(r"`(test_\w+)`", ledger))
    defined = {
        name
        for path in (REPO / "tests").rglob("test_*.py")
        for name in re.findall(r"^\s*def (test_\w+)", path.read_text(), flags=re.M)
    }
    assert len(named) > 40 and not named - defined, sorted(named - defined)


def test_roi_align_is_maskrcnn_benchmarks():
    """MSPwA and FPN pooling: ROIAlign with sampling ratio 2 and no half-pixel offset (aligned=False)."""
    torch.manual_seed(0)
    features = {str(k): torch.randn(1, 8, 64 // 2**k, 64 // 2**k) for k in range(4)}
    boxes = [torch.tensor([[13.3, 20.1, 160.7, 119.9]])]
    mspwa, _ = build_pooler("mspwa", 7, channels=8)
    pooled = mspwa.pool_levels(features, boxes, [(256, 256)])  # P2..P5 of a 256 px image
    rois = torch.cat([torch.zeros(1, 1), boxes[0]], dim=1)
    expected = [roi_align(features[str(k)], rois, 7, 1 / 4 / 2**k, 2, aligned=False) for k in range(4)]
    torch.testing.assert_close(pooled, torch.cat(expected, dim=1))
    fpn, _ = build_pooler("fpn", 7, channels=8)
    assert fpn.sampling_ratio == 2 and compose_config([], config_name="train").model.sampling_ratio == 2


def test_training_pipeline_jitters_flips_and_resizes():
    """Colour jitter 0.4 (hue 0.04) with p=0.8, flip with p=0.5, short side 800 / long side 1333: the paper
    configuration's defaults."""
    data = compose_config([], config_name="train").data
    assert (data.color_jitter, data.hflip_prob, data.min_size, data.max_size) == (0.4, 0.5, 800, 1333)
    jitter, flip, resize = build_transforms(AugmentConfig(), train=True).transforms
    assert isinstance(jitter, A.ColorJitter) and jitter.p == 0.8
    assert tuple(jitter.brightness) == tuple(jitter.contrast) == tuple(jitter.saturation) == (0.6, 1.4)
    assert tuple(jitter.hue) == (-0.04, 0.04)
    assert isinstance(flip, A.HorizontalFlip) and flip.p == 0.5
    assert isinstance(resize, ShortSideResize) and (resize.min_short, resize.max_long) == (800, 1333)


def test_paper_constants_are_the_defaults():
    """Eq. 1-3: K = 4 bins, alpha 0.2 for the background, exponent 2, w1 = w2 = 0.25, ignore label 255."""
    aux = compose_config([], config_name="train").model.aux
    assert (aux.dt_bins, aux.background_alpha, aux.gamma) == (4, 0.2, 2.0)
    assert (aux.dt_weight, aux.seg_weight, aux.ignore_index) == (0.25, 0.25, 255)
