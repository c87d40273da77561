"""A run's config: its identity (what a resumed run must share), and the config of a run that reads another
run's checkpoint (resume, evaluation, prediction), merged from that run's saved ``.hydra/config.yaml``."""

import logging
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from datnet.models.backbone import backbone_for_checkpoint

log = logging.getLogger(__name__)

VOLATILE_KEYS = ("ckpt_path", "resume", "hydra")  # may differ between a run and its resumption
RUN_CONFIG_GROUPS = ("model", "data")  # what evaluation and prediction take from the run


def _plain(node: DictConfig | ListConfig, key: Any) -> Any:
    """``node[key]`` resolved into plain Python; its interpolation string when it cannot be resolved."""
    try:
        value = node[key]
    except Exception:  # noqa: BLE001 - any resolver error (e.g. ``${hydra:...}`` outside a Hydra run)
        return OmegaConf.to_container(node, resolve=False)[key]
    return _container(value) if isinstance(value, DictConfig | ListConfig) else value


def _container(node: DictConfig | ListConfig) -> Any:
    try:
        return OmegaConf.to_container(node, resolve=True, throw_on_missing=False)
    except Exception:  # noqa: BLE001 - resolve the children one by one, keeping what cannot be resolved
        if isinstance(node, DictConfig):
            return {str(key): _plain(node, key) for key in node.keys()}
        return [_plain(node, index) for index in range(len(node))]


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """``cfg`` as a plain dict with every interpolation resolved, without the ``hydra`` node (the W&B run's
    config, so that runs filter by any hyperparameter). A value that cannot be resolved here (e.g.
    ``${hydra:...}`` outside a Hydra run) keeps its interpolation string; a missing one (``???``) stays
    ``"???"``."""
    return {str(key): _plain(cfg, key) for key in cfg.keys() if key != "hydra"}


def run_identity(cfg: DictConfig) -> dict[str, Any]:
    """What identifies a run's config: the resolved config without the keys that may change when it is
    resumed (``ckpt_path``, ``resume``, ``hydra``). Saved in its checkpoints; auto-resume compares it."""
    return {k: v for k, v in resolved_config(cfg).items() if k not in VOLATILE_KEYS}


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): tree}


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: saved -> current`` for every leaf that differs (a key missing on one side shows as None)."""
    a, b = _flat(saved), _flat(current)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


def require_checkpoint(path: str | Path, key: str) -> Path:
    """``path`` when it is a file, else ``FileNotFoundError`` naming ``key`` (the option that gave it): the
    first error of a run given a mistyped checkpoint, before any data or model is built."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{key}: checkpoint file {path} does not exist")
    return path


def checkpoint_run_dir(ckpt_path: str | Path | None) -> Path | None:
    """``<run>`` for a checkpoint ``<run>/checkpoints/NAME.ckpt`` of a run that saved its config
    (``<run>/.hydra/config.yaml``); None otherwise."""
    if not ckpt_path:
        return None
    run = Path(ckpt_path).resolve().parent.parent
    return run if (run / ".hydra" / "config.yaml").is_file() else None


def with_run_config(
    cfg: DictConfig, overrides: list[str], groups: tuple[str, ...] | None = RUN_CONFIG_GROUPS
) -> DictConfig:
    """``cfg`` whose ``groups`` (model and data; None: every top-level key of the run's config but
    ``hydra``, for a resumed training run) come from the config saved by the training run that wrote
    ``cfg.ckpt_path`` (``<run>/.hydra/config.yaml``), with the command line's value overrides applied on top
    (for ``groups``, those of keys under them; for the whole config, every override that is not a config
    group choice). Unchanged when there is no such file, or when the command line picks an option of its
    own: any ``model=``, ``data=`` or ``experiment=`` override for ``groups``; a config group option other
    than the run's (``<run>/.hydra/hydra.yaml``) for the whole config. Each group is taken whole: a top-level
    key the run's config lacks (added since) keeps this command's value, but a key added since inside a
    taken group (e.g. under ``model``) is absent from the result, not filled in from this command's
    config."""
    saved = Path(cfg.ckpt_path).resolve().parent.parent / ".hydra" / "config.yaml"
    parsed = OverridesParser.create().parse_overrides(overrides)
    if not saved.is_file():
        return cfg
    if groups is None:
        choices = OmegaConf.load(saved.parent / "hydra.yaml").hydra.runtime.choices
        picked = [o for o in parsed if o.key_or_group in choices and o.value() != choices[o.key_or_group]]
        values = [o for o in parsed if o.key_or_group not in choices]
    else:
        picked = [o for o in parsed if o.key_or_group in {*groups, "experiment"}]
        values = [o for o in parsed if o.key_or_group.split(".", 1)[0] in groups]
    if picked:
        log.info(
            "%s picked on the command line: the run's config (%s) is not used", picked[0].input_line, saved
        )
        return cfg
    run_cfg = OmegaConf.load(saved)
    cfg = cfg.copy()
    with open_dict(cfg):
        for group in groups or [key for key in run_cfg if key != "hydra"]:
            cfg[group] = run_cfg[group]
        for override in values:
            OmegaConf.update(cfg, override.key_or_group, override.value(), force_add=True)
    log.info("%s taken from %s", "model and data configs" if groups else "the run's config", saved)
    return cfg


def for_checkpoint(cfg: DictConfig) -> DictConfig:
    """``cfg`` whose model is built for a whole-model checkpoint loaded after it: the backbone with
    ``weights=scratch`` (the BatchNorm kind and trainable stages of the original ``weights``) and no
    ``model.checkpoint`` (a run fine-tuned from one does not load it again): evaluating, predicting or
    resuming never looks for ImageNet weights or the run's starting checkpoint, and works offline."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.model.backbone = backbone_for_checkpoint(OmegaConf.to_container(cfg.model.backbone, resolve=True))
        cfg.model.checkpoint = None
    return cfg
