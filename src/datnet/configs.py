"""Access to the project's Hydra configuration tree (``conf/``) outside ``@hydra.main`` entry points."""

import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = PROJECT_ROOT / "conf"
# `conf/paths` resolves the data and log directories from it; an explicit environment value wins.
os.environ.setdefault("PROJECT_ROOT", str(PROJECT_ROOT))


def shared_data_root() -> Path:
    """The small real datasets: ``$DATNET_SHARED_DATA``, default ``<repo>/../shared/data``."""
    return Path(os.environ.get("DATNET_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


def compose_config(overrides: list[str], config_name: str | None = None) -> DictConfig:
    """Composes ``config_name`` (or nothing, for single groups such as ``+model=light``) with overrides."""
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        return compose(config_name=config_name, overrides=overrides)
