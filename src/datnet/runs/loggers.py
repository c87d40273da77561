"""Instantiating loggers and callbacks from Hydra config groups; W&B never blocks without network."""

import netrc
import os
import secrets
import warnings
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from pytorch_lightning import Callback
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

from datnet.runs.config import resolved_config

WANDB_TARGET = "pytorch_lightning.loggers.wandb.WandbLogger"
WANDB_ID_FILE = "wandb_run_id.txt"


def wandb_credentials_available() -> bool:
    """An API key in the environment or ``~/.netrc`` (what ``wandb login`` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_run_identity() -> dict[str, Any]:
    """Name, group and config of this job's W&B run: in a Hydra multirun each job is its own run, named by
    its overrides and grouped by the sweep directory, with the overrides in its config."""
    if not HydraConfig.initialized():
        return {}
    hydra_cfg = HydraConfig.get()
    identity: dict[str, Any] = {"config": {"overrides": list(hydra_cfg.overrides.task)}}
    if hydra_cfg.mode == RunMode.MULTIRUN:
        identity["name"] = hydra_cfg.job.override_dirname or f"job{hydra_cfg.job.num}"
        identity["group"] = Path(hydra_cfg.sweep.dir).name
    return identity


def uses_wandb(cfg: DictConfig | None) -> bool:
    """Whether the ``logger`` group holds a W&B logger."""
    return any(isinstance(c, DictConfig) and c.get("_target_") == WANDB_TARGET for c in (cfg or {}).values())


def wandb_run_id(directory: Path, resuming: bool) -> str:
    """The id of the run's W&B run, kept in ``directory/wandb_run_id.txt``: the stored one when the run
    resumes (the same W&B run continues), else a new one, stored (by global rank 0; the other ranks log
    nothing to W&B)."""
    path = directory / WANDB_ID_FILE
    if resuming and path.is_file():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)
    if rank_zero_only.rank == 0:
        path.write_text(run_id + "\n")
    return run_id


def instantiate_loggers(
    cfg: DictConfig | None, run_config: DictConfig | None = None, wandb_id: str | None = None
) -> list[Logger]:
    """One logger per entry of the ``logger`` group. A W&B logger without credentials (and with no explicit
    ``WANDB_MODE``) runs in offline mode, with a warning, so a run never waits on the network.

    The W&B run's config is the whole resolved ``run_config`` (the run's composed config; see
    :func:`resolved_config`) plus the Hydra overrides under ``overrides``; ``wandb_id`` (:func:`wandb_run_id`)
    is its run id, resumed (``resume="allow"``) when W&B knows it already."""
    loggers: list[Logger] = []
    for conf in (cfg or {}).values():
        if not isinstance(conf, DictConfig) or "_target_" not in conf:
            continue
        kwargs: dict[str, Any] = {}
        if conf._target_ == WANDB_TARGET:
            offline = conf.get("offline", False) or os.environ.get("WANDB_MODE") is not None
            if not offline and not wandb_credentials_available():
                warnings.warn(
                    "no W&B credentials found: logging to W&B offline (sync later with `wandb sync`)",
                    stacklevel=2,
                )
                kwargs["offline"] = True
            kwargs.update({k: v for k, v in wandb_run_identity().items() if conf.get(k) is None})
            if wandb_id is not None and conf.get("id") is None:
                kwargs.update(id=wandb_id, resume="allow")
            if conf.get("config") is None and run_config is not None:
                kwargs["config"] = {**resolved_config(run_config), **kwargs.get("config", {})}
            # the run config goes to the logger, not into ``conf``: ``config`` is no keyword of
            # ``instantiate`` itself, and the ``_target_`` nodes in it (model, data, ...) must stay config
            config = kwargs.pop("config", None)
            conf = conf.copy()
            with open_dict(conf):
                conf.merge_with(kwargs)
            logger = instantiate(conf, _convert_="all", _partial_=True)
            loggers.append(logger() if config is None else logger(config=config))
        else:
            loggers.append(instantiate(conf, _convert_="all"))
    return loggers


def instantiate_callbacks(
    cfg: DictConfig | None, every_n_train_steps: tuple[int, int] | None = None
) -> list[Callback]:
    """One callback per entry of the ``callbacks`` group (entries set to null are dropped).
    ``every_n_train_steps=(written, scaled)``: a callback whose ``every_n_train_steps`` is the schedule's
    ``written`` value is built with the ``scaled`` one instead (``datnet.runs.plan``); another value, set on
    the command line, is kept."""
    callbacks = []
    for conf in (cfg or {}).values():
        if not isinstance(conf, DictConfig) or "_target_" not in conf:
            continue
        kwargs = {}
        if every_n_train_steps is not None and conf.get("every_n_train_steps") == every_n_train_steps[0]:
            kwargs["every_n_train_steps"] = every_n_train_steps[1]
        callbacks.append(instantiate(conf, **kwargs))
    return callbacks
