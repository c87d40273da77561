"""The torch / torchvision / Lightning API that this project's code uses, checked against the versions of the
GPU machine (torch 2.11.0, torchvision 0.26.0, pytorch-lightning 2.6.6, torchmetrics 1.9.0), which are older
than the ones pinned in pyproject.toml.

A *reference* is what the code asks of those packages: a module it imports (``import torch.nn.functional``),
a name it imports from one (``from torchvision.ops import roi_align``), an attribute reached from a module it
imported (``F.interpolate``, ``torch.utils.checkpoint.checkpoint``: each step that names a submodule goes
on into it), and a Hydra ``_target_`` in ``conf/``. They are found with ``ast`` in ``src/`` and ``scripts/``.

Run under the GPU machine's versions (``.venv-device/``, built by ``scripts/gpu/device_venv.sh``), this script
writes the manifest ``tests/scripts/device_api_manifest.json``: the versions, and the names (``dir()``) of
every public module of torch and torchvision, of the private ones the code imports, and of the Lightning and
torchmetrics modules the code reaches (those two have the same versions here and there). Modules are
imported, never installed or downloaded. ``tests/scripts/test_device_compat.py`` resolves every reference
against that manifest (on the CPU, in .venv, without torch 2.11) and fails on a module or name that is not
there. After a new module of torch is used, or the GPU machine's versions change, regenerate it:

    bash scripts/gpu/device_venv.sh
    .venv-device/bin/python scripts/gpu/device_api_manifest.py [--output PATH]
"""

import argparse
import ast
import importlib
import json
import pkgutil
import re
import sys
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Protocol

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "tests" / "scripts" / "device_api_manifest.json"
PACKAGES = ("torch", "torchvision", "pytorch_lightning", "torchmetrics")
# Every public module of these is recorded; of the others only the modules that the code reaches.
FULLY_RECORDED = ("torch", "torchvision")
CODE_DIRS = ("src", "scripts")
TARGET_RE = re.compile(r"^\s*_target_:\s*([\w.]+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Reference:
    """``path``, followed from a module of ``PACKAGES``: ``torch.nn.functional.interpolate``."""

    path: str
    where: str  # file:line


class Api(Protocol):
    def is_module(self, name: str) -> bool: ...

    def names(self, module: str) -> set[str] | None:
        """The attributes of ``module``, None where they are not known."""


def _chain(node: ast.Attribute) -> tuple[str, list[str]] | None:
    """``a.b.c`` -> ("a", ["b", "c"]); None where the chain does not start at a plain name."""
    attrs = []
    value: ast.expr = node
    while isinstance(value, ast.Attribute):
        attrs.append(value.attr)
        value = value.value
    return (value.id, attrs[::-1]) if isinstance(value, ast.Name) else None


def references_in_source(source: str, filename: str, api: Api) -> Iterator[Reference]:
    """The references of one Python file. ``api`` tells which imported names are modules (``from torch
    import nn`` binds a module, ``from torch import Tensor`` does not)."""
    tree = ast.parse(source, filename)
    bound: dict[str, str] = {}  # local name -> module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    yield Reference(alias.name, f"{filename}:{node.lineno}")
                    local = alias.asname or alias.name.split(".")[0]
                    bound[local] = alias.name if alias.asname else local
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in PACKAGES:
                yield Reference(node.module, f"{filename}:{node.lineno}")
                for alias in filter(lambda alias: alias.name != "*", node.names):
                    yield Reference(f"{node.module}.{alias.name}", f"{filename}:{node.lineno}")
                    if api.is_module(f"{node.module}.{alias.name}"):
                        bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    inner = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in inner:
            chain = _chain(node)
            if chain and chain[0] in bound:
                yield Reference(".".join([bound[chain[0]], *chain[1]]), f"{filename}:{node.lineno}")


def references_in_config(text: str, filename: str) -> Iterator[Reference]:
    """The Hydra ``_target_`` values of one YAML file that name something in ``PACKAGES``."""
    for match in TARGET_RE.finditer(text):
        if match.group(1).split(".")[0] in PACKAGES:
            line = text.count("\n", 0, match.start(1)) + 1
            yield Reference(match.group(1), f"{filename}:{line}")


def project_references(api: Api, root: Path = ROOT) -> list[Reference]:
    """Every reference of ``src/``, ``scripts/`` and ``conf/`` (paths relative to ``root``)."""
    refs: list[Reference] = []
    for folder in CODE_DIRS:
        for path in sorted((root / folder).rglob("*.py")):
            rel = str(path.relative_to(root))
            refs.extend(references_in_source(path.read_text(), rel, api))
    for path in sorted((root / "conf").rglob("*.yaml")):
        refs.extend(references_in_config(path.read_text(), str(path.relative_to(root))))
    return refs


def resolve(path: str, api: Api) -> tuple[list[str], str | None]:
    """Follows ``path`` from its package: the modules it passes through, and why it fails (None if it
    resolves). Each part is a submodule (and the walk goes on) or a name of the module reached (and the walk
    stops there: what follows is an attribute of an object, not checked)."""
    parts = path.split(".")
    module = parts[0]
    visited = [module]
    if not api.is_module(module):
        return visited, f"module {module} is missing"
    for part in parts[1:]:
        if api.is_module(f"{module}.{part}"):
            module = f"{module}.{part}"
            visited.append(module)
            continue
        names = api.names(module)
        if names is None:
            return visited, f"the names of module {module} are not recorded"
        return visited, None if part in names or is_dunder(part) else f"{module} has no {part}"
    return visited, None


def module_names(module: ModuleType) -> set[str]:
    """``dir(module)``, and for a module replaced by an instance of a ``ModuleType`` subclass (as
    ``torch.backends.cudnn`` is) the names of that class and of the original module it wraps; for torch's
    config modules (``torch.compiler.config``), whose settings ``dir`` does not list, their settings."""
    names = set(dir(module))
    if type(module) is not ModuleType:
        names.update(dir(type(module)))
        names.update(getattr(module, "_config", {}))
        for value in vars(module).values():
            if isinstance(value, ModuleType) and value is not module and value.__name__ == module.__name__:
                names.update(dir(value))
    return names


class RuntimeApi:
    """The API of the installed packages, found by importing them."""

    def __init__(self) -> None:
        self.modules: dict[str, ModuleType | None] = {}

    def module(self, name: str) -> ModuleType | None:
        if name not in self.modules:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self.modules[name] = importlib.import_module(name)
            except Exception:  # absent, or it fails to import here: either way the code cannot use it
                self.modules[name] = None
        return self.modules[name]

    def is_module(self, name: str) -> bool:
        return self.module(name) is not None

    def names(self, module: str) -> set[str] | None:
        found = self.module(module)
        return None if found is None else module_names(found)


def public_modules(package: str) -> Iterator[str]:
    """``package`` and its submodules whose names have no part that starts with ``_``."""
    yield package
    path = importlib.import_module(package).__path__
    for info in pkgutil.walk_packages(path, f"{package}.", onerror=lambda _: None):
        if not any(part.startswith("_") for part in info.name.split(".")):
            yield info.name


def is_dunder(name: str) -> bool:
    """``__name__``, ``__file__``, ...: what every module has (``__version__`` aside), so not recorded."""
    return name.startswith("__") and name.endswith("__") and name != "__version__"


def recorded_names(module: ModuleType) -> list[str]:
    """``module_names(module)`` less the dunders and the modules it imported from outside its own package
    (``os``, ``math``, ...)."""
    package = module.__name__.split(".")[0]
    keep = []
    for name in filter(lambda name: not is_dunder(name), module_names(module)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = getattr(module, name, None)
        if isinstance(value, ModuleType) and value.__name__.split(".")[0] != package:
            continue
        keep.append(name)
    return sorted(keep)


def build_manifest(references: Iterable[Reference], api: RuntimeApi) -> dict:
    """The versions, and the names of every public module of ``FULLY_RECORDED`` and of every module that a
    reference passes through."""
    wanted: set[str] = set()
    for package in FULLY_RECORDED:
        wanted.update(public_modules(package))
    for ref in references:
        wanted.update(resolve(ref.path, api)[0])
    modules = {name: recorded_names(found) for name in sorted(wanted) if (found := api.module(name))}
    versions = {package: importlib.import_module(package).__version__ for package in PACKAGES}
    versions["python"] = sys.version.split()[0]
    return {"versions": versions, "modules": modules}


def write_manifest(manifest: dict, path: Path) -> None:
    """JSON with one line per module, so that a regenerated manifest diffs by module."""
    lines = [f"  {json.dumps(name)}: {json.dumps(names)}" for name, names in manifest["modules"].items()]
    path.write_text(
        f'{{\n "versions": {json.dumps(manifest["versions"])},\n "modules": {{\n'
        + ",\n".join(lines)
        + "\n }\n}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", type=Path, default=MANIFEST)
    args = parser.parse_args()
    api = RuntimeApi()
    references = project_references(api)
    broken = [(ref, error) for ref in references if (error := resolve(ref.path, api)[1])]
    for ref, error in broken:
        print(f"{ref.where}: {ref.path}: {error}", file=sys.stderr)
    manifest = build_manifest(references, api)
    write_manifest(manifest, args.output)
    print(
        f"{args.output}: {len(manifest['modules'])} modules of {manifest['versions']}, "
        f"{len(references)} references, {len(broken)} unresolved"
    )


if __name__ == "__main__":
    main()
