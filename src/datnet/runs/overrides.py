"""Command-line overrides checked against the composed config before Hydra runs: a key that does not exist
(``model.aux.dtt=true``) is named with the closest existing keys (``did you mean model.aux.dt?``) instead of
Hydra's advice to add it with ``+``, which would only move the error into the model's constructor."""

import difflib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import OmegaConf

from datnet.configs import CONF_DIR


class UnknownKeyError(KeyError):
    """Overrides naming keys the composed config does not have; the message lists the closest keys."""

    def __str__(self) -> str:
        return str(self.args[0])


def dotted_keys(node: object, prefix: str = "") -> Iterator[str]:
    """Every key of a plain (``OmegaConf.to_container``) config, dotted: ``model``, ``model.aux``, ..."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        dotted = f"{prefix}{key}"
        yield dotted
        yield from dotted_keys(value, f"{dotted}.")


def has_key(node: object, dotted: str) -> bool:
    """Whether the plain config ``node`` has the dotted key (list items by index)."""
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def is_group(config_dir: Path, override: Override) -> bool:
    """A config group choice (``model=heavy``, ``hydra/launcher=basic``), not a value."""
    key = override.key_or_group
    return key.startswith("hydra") or (config_dir / key.replace(".", "/")).is_dir()


def first_choice(override: Override) -> str:
    """The override as one ``key=value`` string; a sweep (``model=light,heavy``) by its first value."""
    prefix = {"ADD": "+", "FORCE_ADD": "++", "DEL": "~"}.get(override.type.name, "")
    value = next(override.sweep_string_iterator()) if override.is_sweep_override() else None
    if value is None:
        return override.input_line
    return f"{prefix}{override.key_or_group}={value}"


def check_override_keys(config_dir: str | Path, config_name: str, args: Sequence[str]) -> None:
    """Raises :class:`UnknownKeyError` when a plain override (``key=value``, no ``+``) names a key that the
    config composed from the other overrides does not have. Config group choices, ``+``/``++``/``~``
    overrides and ``hydra.*`` keys are Hydra's to check. Composes only when there is a key to check."""
    config_dir = Path(config_dir).resolve()
    overrides = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    values = [o for o in overrides if not is_group(config_dir, o) and o.type.name == "CHANGE"]
    if not values:
        return
    composing = [first_choice(o) for o in overrides if o not in values]
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = OmegaConf.to_container(compose(config_name, overrides=composing), resolve=False)
    unknown = [o.key_or_group for o in values if not has_key(cfg, o.key_or_group)]
    if not unknown:
        return
    known = list(dotted_keys(cfg))
    lines = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}?" if close else "no similar key exists"
        lines.append(f"unknown config key '{key}': {hint}")
    lines.append("('+key=value' adds a new key, which the code it reaches must then accept)")
    raise UnknownKeyError("\n".join(lines))


# Hydra's own flags that take a value (``hydra --help``); their values are not overrides.
VALUE_FLAGS = {
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
}


def override_args(argv: Sequence[str]) -> list[str]:
    """The overrides among an entry point's arguments: Hydra's flags and their values left out."""
    args, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg in VALUE_FLAGS
        else:
            args.append(arg)
    return args


def exit_on_unknown_keys(config_name: str, argv: Sequence[str]) -> None:
    """An entry point's check before ``@hydra.main``: unknown keys are printed with their closest existing
    keys and the process exits with status 2. DDP's relaunched ranks (``LOCAL_RANK`` > 0) skip it: rank 0
    checked the same arguments."""
    if int(os.environ.get("LOCAL_RANK", "0")) > 0:
        return
    try:
        check_override_keys(CONF_DIR, config_name, override_args(argv))
    except UnknownKeyError as error:
        print(f"Error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
