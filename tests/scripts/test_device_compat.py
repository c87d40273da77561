"""The code runs on the GPU machine's older packages: every torch / torchvision / Lightning module, name and
attribute that ``src/``, ``scripts/`` and the ``_target_`` of ``conf/`` use exists in torch 2.11.0 and
torchvision 0.26.0, checked against ``tests/scripts/device_api_manifest.json`` (written from those versions by
``scripts/gpu/device_api_manifest.py``), without them installed and without the network."""

import json
from collections.abc import Iterable
from types import ModuleType

import pytest

GPU_VERSIONS = {
    "torch": "2.11.0",
    "torchvision": "0.26.0",
    "pytorch_lightning": "2.6.6",
    "torchmetrics": "1.9.0",
}


class ManifestApi:
    """The API that the manifest recorded: its modules and their names."""

    def __init__(self, manifest: dict) -> None:
        self.modules = {name: set(names) for name, names in manifest["modules"].items()}

    def is_module(self, name: str) -> bool:
        return name in self.modules

    def names(self, module: str) -> set[str] | None:
        return self.modules.get(module)


@pytest.fixture(scope="module")
def tool(load_script):
    return load_script("gpu/device_api_manifest")


@pytest.fixture(scope="module")
def manifest(tool) -> dict:
    return json.loads(tool.MANIFEST.read_text())


@pytest.fixture(scope="module")
def api(manifest) -> ManifestApi:
    return ManifestApi(manifest)


def unresolved(tool: ModuleType, api: ManifestApi, references: Iterable) -> list[str]:
    """``file:line: reference: why`` for each reference that does not resolve."""
    return [
        f"{ref.where}: {ref.path}: {error}" for ref in references if (error := tool.resolve(ref.path, api)[1])
    ]


def test_manifest_is_of_the_gpu_machines_versions(manifest):
    versions = {package: manifest["versions"][package].split("+")[0] for package in GPU_VERSIONS}
    assert versions == GPU_VERSIONS


def test_every_reference_exists_on_the_gpu_machine(tool, manifest, api):
    references = tool.project_references(api)
    assert len(references) > 100  # the walk found the code
    broken = unresolved(tool, api, references)
    assert not broken, (
        f"not in the GPU machine's {manifest['versions']} (absent there, or a module the manifest does not "
        "record: then regenerate it with `.venv-device/bin/python scripts/gpu/device_api_manifest.py`):\n"
        + "\n".join(broken)
    )


def test_what_the_older_versions_lack_is_caught(tool, api):
    """Every line is valid under .venv's torch 2.14.1 / torchvision 0.29.1; four are not under 2.11 / 0.26."""
    source = "\n".join(
        [
            "import torch.nn.functional as F",
            "from torch import nn",
            "import torch.accelerator.graphs",  # a module new after torch 2.11
            "from torchvision.io.image import decode_jpeg, _warn_deprecated",  # a name new after 0.26
            "F.interpolate(x)",
            "F.linear_cross_entropy(x, w, y)",  # new after torch 2.11
            "nn.LinearCrossEntropyLoss()",
            "nn.modules.conv.Conv2d(1, 1, 1).weight.data",  # attributes of objects are not followed
            "from torch.nn.init import *",
        ]
    )
    broken = unresolved(tool, api, tool.references_in_source(source, "probe.py", api))
    assert broken == [
        "probe.py:3: torch.accelerator.graphs: torch.accelerator has no graphs",
        "probe.py:4: torchvision.io.image._warn_deprecated: torchvision.io.image has no _warn_deprecated",
        "probe.py:6: torch.nn.functional.linear_cross_entropy: "
        "torch.nn.functional has no linear_cross_entropy",
        "probe.py:7: torch.nn.LinearCrossEntropyLoss: torch.nn has no LinearCrossEntropyLoss",
    ]


def test_hydra_targets_are_references(tool, api):
    text = "optimizer:\n  _target_: torch.optim.SGDX\n  lr: 0.1\nother:\n  _target_: datnet.models.build\n"
    references = list(tool.references_in_config(text, "conf/x.yaml"))
    assert [(ref.path, ref.where) for ref in references] == [("torch.optim.SGDX", "conf/x.yaml:2")]
    assert unresolved(tool, api, references) == ["conf/x.yaml:2: torch.optim.SGDX: torch.optim has no SGDX"]
