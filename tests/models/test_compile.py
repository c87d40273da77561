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
from datnet.models import compile_dense_
from datnet.runs.tasks import train

from .conftest import make_target, small_model

# a square first batch (Dynamo would tie height and width), then one that pads to another, non-square size
SIZES = [[(128, 128), (128, 128)], [(128, 160), (120, 150)]]


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


def test_lightning_run_compiles_the_dense_part_at_most_three_times(tmp_path):
    """``module.compile=true``: 20 multi-scale training steps and a validation with a last batch of one image
    compile the dense part at most 3 times (training; evaluation; evaluation of one image: at most 2
    recompiles), reported as ``compile/graphs``; the checkpoint's state dict has the keys of an uncompiled
    model. Dynamo's ``eager`` backend: inductor would compile for minutes on 2 CPU cores."""
    cfg = compose_config(
        [
            "experiment=demo",
            "module.compile=true",
            "module.compile_backend=eager",
            "model.backbone.out_channels=32",
            "model.detector.box_batch_size_per_image=16",
            "data.num_train=40",
            "data.num_val=3",
            "data.batch_size=2",
            "data.val_batch_size=2",
            "data.num_workers=0",
            "data.min_size=96",
            "data.max_size=160",
            "data.multiscale=true",
            "data.multiscale_range=[64,160]",
            "data.multiscale_max_size=192",
            f"data.root={tmp_path / 'shapes'}",
            "trainer.max_steps=20",
            "callbacks.rich_progress_bar=null",
            "callbacks.rich_model_summary=null",
            "callbacks.best_checkpoint=null",
            f"paths.output_dir={tmp_path}",
        ],
        config_name="train",
    )
    metrics = train(cfg)
    assert metrics["step"] == 20 and "val/bbox/AP" in metrics
    assert 2 <= metrics["compile/graphs"] <= 3
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    uncompiled = instantiate(cfg.model, num_classes=4, resize_images=False)
    assert sorted(state) == sorted(f"model.{key}" for key in uncompiled.state_dict())
