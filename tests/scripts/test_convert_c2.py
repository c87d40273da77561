"""scripts/convert_c2_weights.py on a synthetic Caffe2 ``R-50.pkl`` (Detectron / maskrcnn-benchmark names and
shapes, random values): the converted state dict, loaded with the paper's C2 options (stride in the 1x1,
BGR 0..255 input), computes exactly the Caffe2 network written out by hand from the blobs."""

import contextlib
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torchvision.models import resnet50

from datnet.configs import compose_config

BLOCKS = (3, 4, 6, 3)  # ResNet-50, stages res2..res5
C2_PIXEL_MEAN = [102.9801, 115.9465, 122.7717]  # BGR
C2_OPTIONS = [
    "model.backbone.stride_in_1x1=true",
    f"model.transform.image_mean=[{','.join(map(str, C2_PIXEL_MEAN))}]",
    "model.transform.image_std=[1.0,1.0,1.0]",
    "model.transform.pixel_range=255",
    "model.transform.channel_order=bgr",
]


def c2_resnet50_shapes() -> dict[str, tuple[int, ...]]:
    """The blobs of MSRA's ResNet-50 in Caffe2 naming: stem, 16 bottlenecks (projection in block 0), fc."""
    shapes = {"conv1_w": (64, 3, 7, 7), "res_conv1_bn_s": (64,), "res_conv1_bn_b": (64,)}
    inplanes = 64
    for stage, blocks in zip(range(2, 6), BLOCKS):
        width = 64 * 2 ** (stage - 2)
        for block in range(blocks):
            prefix = f"res{stage}_{block}_"
            convs = {
                "branch2a": (width, inplanes, 1, 1),
                "branch2b": (width, width, 3, 3),
                "branch2c": (4 * width, width, 1, 1),
            }
            if block == 0:
                convs["branch1"] = (4 * width, inplanes, 1, 1)
            for name, shape in convs.items():
                shapes[f"{prefix}{name}_w"] = shape
                shapes[f"{prefix}{name}_bn_s"] = shapes[f"{prefix}{name}_bn_b"] = (shape[0],)
            inplanes = 4 * width
    shapes.update(fc1000_w=(1000, 2048), fc1000_b=(1000,))
    return shapes


@pytest.fixture(scope="module")
def c2_blobs() -> dict[str, np.ndarray]:
    """Random blobs: convolutions He-initialised, affine batch norm near identity (a stable deep forward)."""
    rng = np.random.default_rng(0)
    blobs = {}
    for name, shape in c2_resnet50_shapes().items():
        if name.endswith("_bn_s"):
            blob = rng.uniform(0.3, 0.8, shape)
        elif name.endswith(("_bn_b", "_b")):
            blob = rng.normal(0, 0.1, shape)
        else:
            blob = rng.normal(0, np.sqrt(2 / np.prod(shape[1:])), shape)
        blobs[name] = blob.astype(np.float32)
    return blobs


@pytest.fixture(scope="module")
def c2_pickle(c2_blobs, tmp_path_factory) -> Path:
    """``R-50.pkl`` as Detectron ships it: a Python-2 era pickle (``numpy.core`` arrays) of a dict with the
    blobs under ``blobs``, with an SGD momentum blob and one blob that is no ResNet weight."""
    data = {"blobs": {**c2_blobs, "conv1_w_momentum": np.zeros((64, 3, 7, 7), np.float32), "lr": np.ones(1)}}
    raw = pickle.dumps(data, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path = tmp_path_factory.mktemp("c2") / "R-50.pkl"
    path.write_bytes(raw)
    return path


@pytest.fixture(scope="module")
def converted(c2_pickle, load_script) -> tuple[Path, str]:
    """The converted file and what the script printed."""
    out = c2_pickle.parent / "R-50-c2.pth"
    script = load_script("convert_c2_weights")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert script.main([str(c2_pickle), str(out)]) == 0
    return out, printed.getvalue()


def affine(x: torch.Tensor, blobs: dict[str, np.ndarray], name: str) -> torch.Tensor:
    """Caffe2's frozen batch norm (AffineChannel): ``x * s + b`` per channel."""
    scale, bias = (torch.from_numpy(blobs[f"{name}_bn_{p}"])[None, :, None, None] for p in "sb")
    return x * scale + bias


def c2_resnet50_body(blobs: dict[str, np.ndarray], image_bgr: torch.Tensor) -> torch.Tensor:
    """The Caffe2 (MSRA) ResNet-50 up to res5, written from the blob names: stride in ``branch2a``."""

    def conv(x, name, stride=1, padding=0):
        return F.conv2d(x, torch.from_numpy(blobs[f"{name}_w"]), stride=stride, padding=padding)

    x = F.relu(affine(conv(image_bgr, "conv1", 2, 3), blobs, "res_conv1"))
    x = F.max_pool2d(x, 3, 2, 1)
    for stage, blocks in zip(range(2, 6), BLOCKS):
        for block in range(blocks):
            p = f"res{stage}_{block}_"
            stride = 2 if block == 0 and stage > 2 else 1
            y = F.relu(affine(conv(x, p + "branch2a", stride), blobs, p + "branch2a"))
            y = F.relu(affine(conv(y, p + "branch2b", padding=1), blobs, p + "branch2b"))
            y = affine(conv(y, p + "branch2c"), blobs, p + "branch2c")
            shortcut = affine(conv(x, p + "branch1", stride), blobs, p + "branch1") if block == 0 else x
            x = F.relu(y + shortcut)
    return x


def test_pickle_becomes_a_torchvision_resnet50_state_dict(c2_blobs, converted):
    path, printed = converted
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = resnet50()
    net.load_state_dict(state, strict=True)  # every torchvision key, the right shapes
    torch.testing.assert_close(net.fc.weight, torch.from_numpy(c2_blobs["fc1000_w"]), rtol=0, atol=0)
    bn = net.layer3[5].bn3
    torch.testing.assert_close(bn.weight, torch.from_numpy(c2_blobs["res4_5_branch2c_bn_s"]), rtol=0, atol=0)
    assert torch.all(bn.running_mean == 0) and torch.allclose(bn.running_var, torch.tensor(1 - 1e-5))
    assert "-> resnet50" in printed and "skipped 1 optimizer blob(s)" in printed
    assert "unmapped 1 blob(s):\n  lr" in printed


def test_converted_weights_with_c2_options_compute_the_c2_network(c2_blobs, converted):
    """``model.backbone.weights=<converted> stride_in_1x1=true`` and the BGR 0..255 transform: the model's
    normalised image is Caffe2's input and its backbone body is the Caffe2 ResNet-50, to float rounding."""
    path, _ = converted
    cfg = compose_config(["+model=light", f"model.backbone.weights={path}", *C2_OPTIONS])
    model = instantiate(cfg.model, num_classes=3).eval()
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)  # RGB, as the data pipeline sends it
    mean = torch.tensor(C2_PIXEL_MEAN)[:, None, None]
    c2_input = image.flip(0).float() - mean  # BGR, 0..255, minus the pixel mean
    torch.testing.assert_close(model.transform.normalize(image), c2_input)
    torch.testing.assert_close(model.transform.normalize(image.float() / 255), c2_input)
    with torch.no_grad():
        expected = c2_resnet50_body(c2_blobs, c2_input[None])
        got = model.backbone.body(c2_input[None])["3"]
        assert got.abs().max() > 0.1  # a live signal through all 16 blocks
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
        model.backbone.body.layer2[0].conv1.stride, model.backbone.body.layer2[0].conv2.stride = (
            (1, 1),
            (2, 2),
        )
        assert not torch.allclose(model.backbone.body(c2_input[None])["3"], expected, atol=1e-2)
    res5 = model.roi_heads.box_head.res5[0]  # the Light res5 head strides in its 1x1 too
    assert (res5.conv1.stride, res5.conv2.stride) == ((2, 2), (1, 1))


def test_unexpected_content_is_refused(tmp_path, load_script, c2_blobs):
    script = load_script("convert_c2_weights")
    incomplete = {k: v for k, v in c2_blobs.items() if k != "res4_2_branch2b_w"}
    (tmp_path / "incomplete.pkl").write_bytes(pickle.dumps(incomplete, protocol=2))  # no "blobs" level
    with pytest.raises(ValueError, match=r"missing \['layer3.2.conv2.weight'\]"):
        script.main([str(tmp_path / "incomplete.pkl"), str(tmp_path / "out.pth")])
    (tmp_path / "code.pkl").write_bytes(pickle.dumps({"blobs": os.getcwd}))
    with pytest.raises(pickle.UnpicklingError, match="posix.getcwd is not allowed"):
        script.main([str(tmp_path / "code.pkl"), str(tmp_path / "out.pth")])
    assert not (tmp_path / "out.pth").exists()


def test_weights_c2_reads_the_default_output_as_the_c2_network(
    c2_blobs, c2_pickle, load_script, tmp_path, monkeypatch
):
    """Without OUT the script writes where ``model.backbone.weights=c2`` reads (the hub cache of
    ``TORCH_HOME``), and that one override gives the Caffe2 network and input, no other option needed."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with contextlib.redirect_stdout(io.StringIO()):
        assert load_script("convert_c2_weights").main([str(c2_pickle)]) == 0
    assert (tmp_path / "torch" / "hub" / "checkpoints" / "resnet50-c2.pth").is_file()
    model = instantiate(compose_config(["+model=light", "model.backbone.weights=c2"]).model, num_classes=3)
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)
    c2_input = image.flip(0).float() - torch.tensor(C2_PIXEL_MEAN)[:, None, None]
    torch.testing.assert_close(model.eval().transform.normalize(image), c2_input)
    with torch.no_grad():
        expected = c2_resnet50_body(c2_blobs, c2_input[None])
        got = model.backbone.body(c2_input[None])["3"]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
