"""scripts/export.py: a small model's run directory (its saved config and checkpoint) exported and checked on
the real images of the run's data (the shapes data, generated small)."""

import json

import pytest

from datnet.configs import compose_config

RUN = [
    "experiment=demo",
    "data.min_size=64",
    "data.max_size=96",
    "model.detector.rpn_post_nms_top_n_test=20",
    "+model.detector.box_detections_per_img=10",
]


@pytest.fixture(scope="module")
def run_checkpoint(tmp_path_factory, write_random_run) -> str:
    """``<run>/checkpoints/last.ckpt`` of a random Light model (ResNet-18, 64-channel pyramid) trained, as
    its ``<run>/.hydra/config.yaml`` says, on 3 shapes images."""
    root = tmp_path_factory.mktemp("export_run")
    data = [f"data.root={root / 'shapes'}", "data.num_train=2", "data.num_val=3"]
    return str(write_random_run(root, compose_config([*RUN, *data], config_name="train")))


def test_onnx_check_of_a_run_matches_and_writes_the_label_space(
    load_script, run_checkpoint, tmp_path, capsys
):
    out = tmp_path / "exported"
    args = ["--checkpoint", run_checkpoint, "--format", "onnx", "--output", str(out), "--check"]
    assert load_script("export").main(args) == 0
    captured = capsys.readouterr()
    assert "from the training run of the checkpoint" in captured.err
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["format"] == "onnx" and summary["images"] == 3 and summary["match"], summary
    assert summary["detections_eager"] == summary["detections_exported"] > 0
    assert summary["max_box_diff_px"] <= 0.01 and summary["max_mask_prob_diff"] is not None
    metadata = json.loads((out / "export.json").read_text())
    assert metadata["file"] == "model.onnx" and (out / "model.onnx").is_file()
    assert metadata["class_names"] == ["__background__", "circle", "square", "triangle"]
    assert metadata["label_to_category_id"] == {"1": 10, "2": 20, "3": 30}
    assert metadata["outputs"] == ["boxes", "labels", "scores", "masks"]


def test_a_missing_checkpoint_is_the_first_error(load_script, tmp_path, capsys):
    """Before any config is composed or data read (the data config points nowhere)."""
    args = ["--checkpoint", "nope.ckpt", "--format", "onnx", "--output", str(tmp_path), "data.root=/no/such"]
    with pytest.raises(SystemExit) as exit_info:
        load_script("export").main(args)
    assert exit_info.value.code == 2
    assert "--checkpoint: checkpoint file nope.ckpt does not exist" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
