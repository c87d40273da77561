"""compile_dense_: the dense part of Fig. 2 (backbone, auxiliary heads and losses, fusion) compiled as one
dynamic-shape graph gives the eager model's losses, features and detections, keeps the state dict's keys, and
is not recompiled for a batch of another image size. Tiny Light model: ResNet-18, a 32-channel pyramid.

``aot_eager`` (Dynamo capture + AOT autograd, eager kernels) in the training and inference tests, the real
``inductor`` backend once, on the inference graph (a training graph takes minutes to compile on 2 CPU cores).
"""

import copy
import pickle
from collections.abc import Callable

import pytest
import torch
from hydra.utils import instantiate
from torch import Tensor, fx

from datnet.configs import compose_config
from datnet.lightning import module
from datnet.models import compile_dense_
from datnet.runs.tasks import train

from .conftest import make_target, small_model

SIZES = [[(96, 128), (96, 128)], [(128, 160), (120, 150)]]  # the second batch pads to another size


class CountingBackend:
    """A ``torch.compile`` backend counting the graphs Dynamo captures and compiling them with ``backend``."""

    def __init__(self, backend: str = "aot_eager") -> None:
        self.backend = torch._dynamo.lookup_backend(backend)
        self.graphs = 0

    def __call__(self, gm: fx.GraphModule, example_inputs: list) -> Callable:
        self.graphs += 1
        return self.backend(gm, example_inputs)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def tiny_light() -> torch.nn.Module:
    torch.manual_seed(0)
    return small_model("light", backbone=dict(name="resnet18", out_channels=32))


def make_batch(sizes: list[tuple[int, int]]) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    torch.manual_seed(sum(h * w for h, w in sizes))
    return [torch.rand(3, h, w) for h, w in sizes], [make_target(h, w) for h, w in sizes]


def test_state_dict_unchanged_and_copies_run_eagerly():
    model = tiny_light()
    keys = list(model.state_dict())
    compiled = compile_dense_(model, backend=CountingBackend())
    assert compiled is model and model._compiled_dense_features is not None
    assert list(model.state_dict()) == keys
    assert not any("_orig_mod" in k for k in keys)
    assert copy.deepcopy(model)._compiled_dense_features is None
    assert pickle.loads(pickle.dumps(model))._compiled_dense_features is None


def dense_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [*model.backbone.parameters(), *model.auxiliary.parameters()]


def test_compiled_training_matches_eager_without_recompiling():
    """Same losses; the gradients of the auxiliary losses, which flow only through the compiled graph, agree.
    (The detector losses' gradients are not compared: AOT autograd's float rounding, ~1e-7, flips ties in
    the eager ROI heads of this random model, which changes some of their gradients by percents; with
    Dynamo's ``eager`` backend every loss and gradient is bit-identical.)"""
    eager = tiny_light().train()
    backend = CountingBackend()
    compiled = compile_dense_(copy.deepcopy(eager), backend=backend, fullgraph=True)
    for step, sizes in enumerate(SIZES):
        images, targets = make_batch(sizes)
        torch.manual_seed(1)  # the RPN and ROI samplers draw random numbers
        expected = eager(images, targets)
        torch.manual_seed(1)
        losses = compiled(images, targets)
        assert set(losses) == set(expected) and {"loss_dt", "loss_seg"} <= set(losses)
        for name, value in expected.items():
            torch.testing.assert_close(losses[name], value, rtol=1e-4, atol=1e-5)
        aux = [model_losses["loss_dt"] + model_losses["loss_seg"] for model_losses in (expected, losses)]
        expected_grads = torch.autograd.grad(aux[0], dense_parameters(eager))
        grads = torch.autograd.grad(aux[1], dense_parameters(compiled))
        for grad, want in zip(grads, expected_grads):  # relative to the largest element: many are ~0
            torch.testing.assert_close(grad, want, rtol=0, atol=1e-4 * want.abs().max().item())
        if step == 0:
            graphs = backend.graphs
    sum(compiled(images, targets).values()).backward()  # eq. 3 through the eager heads and the compiled graph
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in dense_parameters(compiled))
    assert graphs >= 1 and backend.graphs == graphs, "the second image size recompiled the dense part"


def test_compiled_inference_matches_eager_without_recompiling():
    eager = tiny_light().eval()
    backend = CountingBackend()
    compiled = compile_dense_(copy.deepcopy(eager), backend=backend, fullgraph=True)
    with torch.no_grad():
        for step, sizes in enumerate(SIZES):
            images, _ = make_batch(sizes)
            expected, outputs = eager(images, return_aux_maps=True), compiled(images, return_aux_maps=True)
            for exp, out in zip(expected, outputs):
                assert set(out) == set(exp) == {"boxes", "labels", "scores", "masks", "dt", "sem"}
                for key in exp:
                    torch.testing.assert_close(out[key], exp[key], rtol=1e-4, atol=1e-4)
            if step == 0:
                graphs = backend.graphs
    assert graphs >= 1 and backend.graphs == graphs, "the second image size recompiled the dense part"


def test_inductor_features_match_eager_without_recompiling():
    model = tiny_light().eval()
    backend = CountingBackend("inductor")
    compile_dense_(model, backend=backend, fullgraph=True)
    with torch.no_grad():
        for step, sizes in enumerate(SIZES):
            images, _ = make_batch(sizes)
            tensors = model.transform(images)[0].tensors
            features, _, _ = model.dense_features(tensors)
            compiled, _, _ = model._compiled_dense_features(tensors)
            assert list(compiled) == list(features) == ["0", "1", "2", "3", "pool"]
            for name, value in features.items():
                torch.testing.assert_close(compiled[name], value, rtol=1e-3, atol=1e-4)
            if step == 0:
                graphs = backend.graphs
    assert graphs >= 1 and backend.graphs == graphs, "the second image size recompiled the dense part"


def test_module_compile_through_lightning(tmp_path, monkeypatch):
    """``module.compile=true`` in ``conf/train.yaml`` compiles the dense part of the model that a one-step
    ``experiment=demo`` run trains and evaluates (Dynamo's ``eager`` backend here: inductor would compile for
    minutes on 2 CPU cores); the checkpoint's state dict has the keys of an uncompiled model."""
    compiled: list[torch.nn.Module] = []

    def compile_eagerly(model: torch.nn.Module, mode: str | None = None) -> torch.nn.Module:
        compiled.append(model)
        return compile_dense_(model, mode=mode, backend="eager", fullgraph=True)

    monkeypatch.setattr(module, "compile_dense_", compile_eagerly)
    cfg = compose_config(
        [
            "experiment=demo",
            "module.compile=true",
            "model.backbone.out_channels=32",
            "model.detector.box_batch_size_per_image=16",
            "data.num_train=4",
            "data.num_val=2",
            "data.batch_size=2",
            "data.val_batch_size=2",
            "data.num_workers=0",
            "data.min_size=96",
            "data.max_size=128",
            f"data.root={tmp_path / 'shapes'}",
            "trainer.fast_dev_run=true",
            "callbacks.rich_progress_bar=null",
            "callbacks.rich_model_summary=null",
            f"paths.output_dir={tmp_path}",
        ],
        config_name="train",
    )
    metrics = train(cfg)
    assert metrics["step"] == 1 and "val/bbox/AP" in metrics
    assert len(compiled) == 1 and compiled[0]._compiled_dense_features is not None
    num_classes = compiled[0].roi_heads.box_predictor.cls_score.out_features
    uncompiled = instantiate(cfg.model, num_classes=num_classes, resize_images=False)
    assert list(compiled[0].state_dict()) == list(uncompiled.state_dict())
