"""Printing the composed Hydra config as a rich tree (as in the lightning-hydra-template) and saving it."""

from collections.abc import Sequence
from pathlib import Path

import rich
import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf

PRINT_ORDER = ("data", "model", "optimizer", "schedule", "trainer", "callbacks", "logger", "paths")


def print_config_tree(
    cfg: DictConfig, order: Sequence[str] = PRINT_ORDER, save_dir: str | None = None
) -> None:
    """Prints ``cfg`` one top-level group per branch (``order`` first) and writes it to
    ``save_dir/config_tree.log``."""
    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    fields = [f for f in order if f in cfg] + [f for f in cfg if f not in order]
    for field in fields:
        branch = tree.add(field, style="dim", guide_style="dim")
        value = cfg[field]
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        branch.add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)
    if save_dir:
        with open(Path(save_dir) / "config_tree.log", "w") as file:
            rich.print(tree, file=file)
