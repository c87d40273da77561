"""Instantiating loggers and callbacks from Hydra config groups; W&B never blocks without network."""

import netrc
import os
import warnings

from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from pytorch_lightning import Callback
from pytorch_lightning.loggers import Logger

WANDB_TARGET = "pytorch_lightning.loggers.wandb.WandbLogger"


def wandb_credentials_available() -> bool:
    """An API key in the environment or ``~/.netrc`` (what ``wandb login`` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    """One logger per entry of the ``logger`` group. A W&B logger without credentials (and with no explicit
    ``WANDB_MODE``) runs in offline mode, with a warning, so a run never waits on the network."""
    loggers: list[Logger] = []
    for conf in (cfg or {}).values():
        if not isinstance(conf, DictConfig) or "_target_" not in conf:
            continue
        if conf._target_ == WANDB_TARGET and not conf.get("offline", False):
            if os.environ.get("WANDB_MODE") is None and not wandb_credentials_available():
                warnings.warn(
                    "no W&B credentials found: logging to W&B offline (sync later with `wandb sync`)",
                    stacklevel=2,
                )
                with open_dict(conf):
                    conf.offline = True
        loggers.append(instantiate(conf))
    return loggers


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    """One callback per entry of the ``callbacks`` group (entries set to null are dropped)."""
    return [
        instantiate(conf)
        for conf in (cfg or {}).values()
        if isinstance(conf, DictConfig) and "_target_" in conf
    ]
