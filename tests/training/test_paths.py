"""The dataset root comes from the environment: ``DATNET_DATA_DIR`` sets ``paths.data_dir`` (default
``<repo>/data``), as ``DATNET_SHARED_DATA`` sets ``paths.shared_data_dir``."""

import yaml

from datnet.configs import PROJECT_ROOT, compose_config


def test_data_dir_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DATNET_DATA_DIR", str(tmp_path))
    cfg = compose_config(["data=coco"], config_name="train")
    assert cfg.paths.data_dir == str(tmp_path)
    assert cfg.data.root == f"{tmp_path}/coco"
    monkeypatch.delenv("DATNET_DATA_DIR")
    cfg = compose_config(["data=coco"], config_name="train")
    assert cfg.data.root == f"{PROJECT_ROOT}/data/coco"
    monkeypatch.setenv("DATNET_SHARED_DATA", str(tmp_path / "shared"))
    assert compose_config([], config_name="train").paths.shared_data_dir == str(tmp_path / "shared")


def test_train_cfg_job_shows_the_data_root(run_script):
    out = run_script("src/train.py", ["data=coco", "--cfg", "job", "--resolve"], DATNET_DATA_DIR="/x")
    cfg = yaml.safe_load(out.stdout)
    assert cfg["data"]["root"] == "/x/coco" and cfg["paths"]["data_dir"] == "/x"
