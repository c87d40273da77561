"""Test-time augmentation from the command line: ``src/eval.py tta.flip=true tta.scales=[...]`` on a run's
checkpoint prints METRICS; ``scripts/predict.py --tta-flip --tta-scales`` draws the merged detections."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from datnet.configs import PROJECT_ROOT, compose_config

# a small model (ResNet-18 from scratch, 64-channel pyramid) of the shapes data at 64..96 px
RUN = ["experiment=demo", "data.min_size=64", "data.max_size=96", "data.num_workers=0"]


@pytest.fixture
def shapes_run(tmp_path, write_random_run) -> Path:
    """A training run directory as ``src/train.py`` leaves it (``.hydra/config.yaml``, a Lightning
    ``checkpoints/last.ckpt`` of random weights) for the shapes data, generated small (4 train, 2 val)."""
    data = [f"data.root={tmp_path / 'shapes'}", "data.num_train=4", "data.num_val=2", "data.val_batch_size=2"]
    run_dir = tmp_path / "run"
    write_random_run(run_dir, compose_config([*RUN, *data], config_name="train"), global_step=2)
    return run_dir


def test_eval_with_tta_prints_metrics(shapes_run, tmp_path):
    """Like ``make eval`` with flipped views at two scales, one of them the data's own (64)."""
    ckpt = shapes_run / "checkpoints" / "last.ckpt"
    args = [f"ckpt_path={ckpt}", "tta.flip=true", "tta.scales=[64,80]", f"hydra.run.dir={tmp_path / 'eval'}"]
    out = subprocess.run(
        [sys.executable, "src/eval.py", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("METRICS ")]
    metrics = json.loads(lines[0][len("METRICS ") :])
    assert {"val/bbox/AP", "val/segm/AP", "val/rpn/AR@100", "val/aux/dt_miou"} <= set(metrics)
    saved = OmegaConf.load(tmp_path / "eval" / ".hydra" / "config.yaml")
    assert saved.tta.flip and list(saved.tta.scales) == [64, 80]


def test_predict_with_tta_draws_every_image(load_script, shapes_run, image_dir, tmp_path, capsys):
    ckpt = str(shapes_run / "checkpoints" / "last.ckpt")
    out = tmp_path / "out"
    args = [
        str(image_dir),
        "--checkpoint",
        ckpt,
        "--output-dir",
        str(out),
        "--tta-flip",
        "--tta-scales",
        "48",
        "64",
    ]
    assert load_script("predict").main(args) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "b.png"]


def test_predict_checks_tta_scales_before_loading(load_script, image_dir, capsys):
    with pytest.raises(SystemExit):
        load_script("predict").main([str(image_dir), "data.root=/no/such/data", "--tta-scales", "64", "0"])
    assert "--tta-scales: distinct positive short sides in pixels; got [64, 0]" in capsys.readouterr().err
