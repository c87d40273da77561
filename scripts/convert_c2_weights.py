"""Caffe2 ImageNet weights (maskrcnn-benchmark's and Detectron's ``R-50.pkl``, ``X-101-32x8d.pkl``) as a
torchvision ResNet state dict (the paper's starting point, Sec. 4). By default the file goes where
``model.backbone.weights=c2`` reads it, the torch hub cache (``$TORCH_HOME/hub/checkpoints/resnet50-c2.pth``,
``datnet.models.backbone.c2_file``); with OUT, to OUT, for ``model.backbone.weights=OUT``:

    python scripts/convert_c2_weights.py R-50.pkl [OUT.pth]

The pickle holds numpy arrays under Caffe2 names (inside a ``blobs`` dict or at the top level):
``conv1_w``; ``res_conv1_bn_{s,b}``; ``res<S>_<B>_branch2{a,b,c}_w`` and ``..._bn_{s,b}`` (the three
convolutions of block B of stage S = 2..5); ``res<S>_0_branch1_w`` and ``..._bn_{s,b}`` (the projection
shortcut); ``fc1000_{w,b}`` (``pred_{w,b}`` in X-101). They become torchvision's ``conv1``, ``bn1``,
``layer<S-1>.<B>.conv{1,2,3}`` / ``bn{1,2,3}``, ``downsample.0`` / ``downsample.1`` and ``fc``.

Caffe2's batch norm is a frozen affine map ``x * s + b`` (no statistics): it becomes BatchNorm's ``weight``
and ``bias`` with ``running_mean = 0`` and ``running_var = 1 - eps``, so that torchvision's (frozen)
BatchNorm, ``(x - mean) / sqrt(var + eps) * weight + bias``, is that affine map (as detectron2 does).
Optimizer state (``*_momentum``) is skipped and counted; every other unknown blob is listed, and every
tensor of the torchvision model must be filled with the right shape, or the conversion fails.

The weights differ from torchvision's in two more ways, which ``weights=c2`` implies and a path must be told:
- ``R-50.pkl`` (MSRA) strides in the first 1x1 convolution of each stage:
  ``model.backbone.stride_in_1x1=true`` (maskrcnn-benchmark's ``STRIDE_IN_1X1``; false for ``X-101-32x8d``);
- the input is BGR in 0..255 minus the pixel mean [102.9801, 115.9465, 122.7717], std 1:
  ``model.transform.pixel_range=255 model.transform.channel_order=bgr`` and that ``image_mean``/``image_std``.
"""

import argparse
import pickle
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torchvision.models import get_model

from datnet.models.backbone import c2_file

BN_EPS = 1e-5  # torchvision's BatchNorm2d and FrozenBatchNorm2d
SKIPPED_SUFFIX = "_momentum"  # SGD momentum buffers saved beside the weights
CONV = {"a": "1", "b": "2", "c": "3"}
PARAM = {"w": "weight", "s": "weight", "b": "bias"}
# (blocks per stage, groups, width per group) -> torchvision model
ARCHS = {
    ((3, 4, 6, 3), 1, 64): "resnet50",
    ((3, 4, 23, 3), 1, 64): "resnet101",
    ((3, 4, 6, 3), 32, 4): "resnext50_32x4d",
    ((3, 4, 23, 3), 32, 8): "resnext101_32x8d",
}
# Caffe2 blob name -> torchvision key (``None``: not a weight of the ResNet)
PATTERNS = [
    (re.compile(r"conv1_w"), lambda m: "conv1.weight"),
    (re.compile(r"res_conv1_bn_([sb])"), lambda m: f"bn1.{PARAM[m[1]]}"),
    (
        re.compile(r"res([2-5])_(\d+)_branch2([abc])_w"),
        lambda m: f"layer{int(m[1]) - 1}.{m[2]}.conv{CONV[m[3]]}.weight",
    ),
    (
        re.compile(r"res([2-5])_(\d+)_branch2([abc])_bn_([sb])"),
        lambda m: f"layer{int(m[1]) - 1}.{m[2]}.bn{CONV[m[3]]}.{PARAM[m[4]]}",
    ),
    (re.compile(r"res([2-5])_(\d+)_branch1_w"), lambda m: f"layer{int(m[1]) - 1}.{m[2]}.downsample.0.weight"),
    (
        re.compile(r"res([2-5])_(\d+)_branch1_bn_([sb])"),
        lambda m: f"layer{int(m[1]) - 1}.{m[2]}.downsample.1.{PARAM[m[3]]}",
    ),
    (re.compile(r"(?:fc1000|pred)_([wb])"), lambda m: f"fc.{PARAM[m[1]]}"),
]
# what a Caffe2 weights pickle may contain besides containers and strings: numpy arrays and scalars
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
}


class WeightsUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only: a pickle that would call anything else is refused
    instead of run."""

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a Caffe2 weights pickle")
        return super().find_class(module, name)


def load_c2_blobs(path: Path) -> dict[str, np.ndarray]:
    """The blobs of a Caffe2 weights pickle (Python 2 pickles: latin1 strings), under ``blobs`` or not."""
    with open(path, "rb") as f:
        data = WeightsUnpickler(f, encoding="latin1").load()
    if isinstance(data, Mapping) and isinstance(data.get("blobs"), Mapping):
        data = data["blobs"]
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a dict of Caffe2 blobs, found {type(data).__name__}")
    return dict(data)


def torchvision_key(c2_name: str) -> str | None:
    """The torchvision ResNet key of a Caffe2 blob name, or None."""
    for pattern, key in PATTERNS:
        match = pattern.fullmatch(c2_name)
        if match:
            return key(match)
    return None


def infer_arch(blobs: Mapping[str, np.ndarray], path: Path) -> str:
    """The torchvision model of the blobs: blocks per stage and the grouping of ``res2_0_branch2b_w``."""
    blocks = tuple(
        len({name.split("_")[1] for name in blobs if re.fullmatch(rf"res{s}_\d+_branch2a_w", name)})
        for s in range(2, 6)
    )
    try:
        reduce, grouped = blobs["res2_0_branch2a_w"], blobs["res2_0_branch2b_w"]
    except KeyError as error:
        raise ValueError(f"{path}: no Caffe2 ResNet blob {error}") from error
    groups = reduce.shape[0] // grouped.shape[1]
    signature = (blocks, groups, grouped.shape[0] // groups)
    if signature not in ARCHS:
        raise ValueError(
            f"{path}: blocks per stage {blocks}, {groups} groups of width {signature[2]} match none of "
            f"{sorted(ARCHS.values())}; pass --arch"
        )
    return ARCHS[signature]


def convert(blobs: Mapping[str, np.ndarray], arch: str) -> tuple[dict[str, torch.Tensor], dict[str, list]]:
    """The torchvision ``arch`` state dict of ``blobs``, and what was left: ``skipped`` (optimizer state),
    ``unmapped`` (blobs with no torchvision key). Raises naming every torchvision tensor that is missing or
    has the wrong shape."""
    reference = get_model(arch, weights=None).state_dict()
    state: dict[str, torch.Tensor] = {}
    report: dict[str, list] = {"skipped": [], "unmapped": []}
    for name in sorted(blobs):
        if name.endswith(SKIPPED_SUFFIX):
            report["skipped"].append(name)
            continue
        key = torchvision_key(name)
        if key is None or not isinstance(blobs[name], np.ndarray):
            report["unmapped"].append(name)
        elif key in state:
            raise ValueError(f"{name} and another blob both give {key}")
        else:
            state[key] = torch.from_numpy(np.ascontiguousarray(blobs[name], dtype=np.float32))
    for key, value in reference.items():  # BatchNorm statistics of the affine map, and the step counters
        prefix, _, buffer = key.rpartition(".")
        if buffer == "running_mean":
            state[key] = torch.zeros_like(value)
        elif buffer == "running_var":
            state[key] = torch.full_like(value, 1.0 - BN_EPS)
        elif buffer == "num_batches_tracked":
            state[key] = torch.zeros_like(value)
    missing = sorted(set(reference) - set(state))
    wrong = sorted(
        f"{k}: {tuple(v.shape)}, {arch} has {tuple(reference[k].shape)}"
        for k, v in state.items()
        if k in reference and v.shape != reference[k].shape
    )
    extra = sorted(set(state) - set(reference))
    if missing or wrong or extra:
        raise ValueError(
            f"the blobs do not make a torchvision {arch}: missing {missing}, wrong shapes {wrong}, "
            f"keys {arch} does not have {extra}"
        )
    return {k: state[k] for k in reference}, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="Caffe2 weights pickle (R-50.pkl, X-101-32x8d.pkl)")
    parser.add_argument(
        "output",
        type=Path,
        nargs="?",
        help="torchvision-format state dict to write (.pth); default: where model.backbone.weights=c2 reads",
    )
    parser.add_argument("--arch", help="torchvision model name (default: inferred from the blobs)")
    args = parser.parse_args(argv)
    if not args.input.is_file():
        print(f"error: {args.input} is not a file", file=sys.stderr)
        return 2
    blobs = load_c2_blobs(args.input)
    arch = args.arch or infer_arch(blobs, args.input)
    state, report = convert(blobs, arch)
    output = args.output or c2_file(arch)
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, output)
    converted = len(blobs) - len(report["skipped"]) - len(report["unmapped"])
    print(f"{args.input}: {converted} blobs -> {arch} ({len(state)} tensors) in {output}")
    print(f"skipped {len(report['skipped'])} optimizer blob(s) (*{SKIPPED_SUFFIX})")
    print(f"unmapped {len(report['unmapped'])} blob(s){':' if report['unmapped'] else ''}")
    for name in report["unmapped"]:
        print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
