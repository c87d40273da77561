"""The W&B run's config is the whole resolved run config (without the ``hydra`` node) plus the command-line
overrides, so that runs filter by any hyperparameter."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from datnet.configs import compose_config
from datnet.runs.config import resolved_config

from .conftest import QUIET, TINY


def wandb_records(path: Path) -> Iterator[Any]:
    """The protobuf records of a ``run-*.wandb`` file: a 7-byte header (``:W&B``, magic, version), then
    LevelDB-log chunks (4-byte checksum, 2-byte length, 1-byte type: full, first, middle, last) in 32 KiB
    blocks whose tails shorter than a chunk header are padding."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def saved_config(run: Path) -> dict[str, Any]:
    """The config of an offline W&B run: ``files/config.yaml`` where wandb writes one, else the config
    updates recorded in ``run-*.wandb`` (wandb 0.31 writes no config.yaml for an offline run)."""
    if (run / "files" / "config.yaml").is_file():
        saved = yaml.safe_load((run / "files" / "config.yaml").read_text())
        return {k: v["value"] for k, v in saved.items() if isinstance(v, dict) and "value" in v}
    (log,) = run.glob("run-*.wandb")
    config: dict[str, Any] = {}
    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind not in ("run", "config"):
            continue
        for item in (record.run.config if kind == "run" else record.config).update:
            config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return config


def test_resolved_config_outside_a_hydra_run():
    cfg = compose_config(["experiment=demo", "logger=wandb"], config_name="train")
    config = resolved_config(cfg)
    assert "hydra" not in config and config["model"]["backbone"]["name"] == "resnet18"
    assert config["data"]["root"] == f"{cfg.paths.data_dir}/shapes"  # interpolations resolved
    assert config["paths"]["output_dir"] == "${hydra:runtime.output_dir}"  # unresolvable here: kept as is
    OmegaConf.create(config)  # a plain, complete tree


def test_wandb_run_config_holds_the_resolved_config(tmp_path, shapes_overrides, run_script):
    overrides = [
        "experiment=demo",
        *[o for o in TINY if not o.startswith("logger=")],
        *QUIET,
        *shapes_overrides,
        "logger=wandb",
        "trainer.max_steps=1",  # not fast_dev_run: Lightning replaces the loggers of that by a dummy
        f"paths.log_dir={tmp_path}/logs",
        f"hydra.run.dir={tmp_path}/run",
    ]
    run_script("src/train.py", overrides, WANDB_DIR=str(tmp_path))
    (run,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    config = saved_config(run)
    assert config["model"]["backbone"]["name"] == "resnet18"
    assert config["model"]["aux"]["dt"] is True
    assert config["schedule"]["lr"] == 0.001
    assert config["optimizer"]["_target_"] == "torch.optim.AdamW"
    assert config["data"]["_target_"] == "datnet.data.datamodule.ShapesDataModule"
    assert config["data"]["root"] == shapes_overrides[1].split("=", 1)[1] and config["data"]["num_train"] == 8
    assert config["paths"]["output_dir"] == str(Path(tmp_path) / "run")  # resolved inside the Hydra run
    assert "hydra" not in config
    assert "logger=wandb" in config["overrides"] and "trainer.max_steps=1" in config["overrides"]
