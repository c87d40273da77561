"""``torch.compile`` of DATNet's dense part (backbone, auxiliary heads and losses, fusion; Fig. 2), with the
graphs it compiles counted and a warning when Dynamo stops compiling it."""

import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from datnet.models.datnet import DATNet

log = logging.getLogger(__name__)


class CompiledDenseFeatures:
    """``DATNet.dense_features`` under ``torch.compile`` with dynamic shapes.

    Before each call the padded batch's height and width (and those of the dense targets) are marked
    dynamic, so that a square first batch does not tie the two sides into one symbol (Dynamo's duck sizing),
    which would compile again at the first non-square batch. The graphs compiled are counted (``graphs``):
    one for training and one for evaluation (grad mode and inputs differ), one more in either for a batch of
    a single image (Dynamo specialises sizes 0 and 1; marking that dimension unbacked does not trace through
    the heads' reshapes). Each new graph is logged with its input shape; when the count reaches
    ``torch.compiler.config.recompile_limit``, after which Dynamo runs the function eagerly, a warning says
    so.
    """

    def __init__(self, dense_features: Callable, **compile_kwargs: object) -> None:
        self.compiled = torch.compile(dense_features, **compile_kwargs)
        # Dynamo's per-process statistics, the one place that says how many graphs a call compiled (no public
        # API exposes it in torch 2.11-2.14; docs/design.md lists it, tests/models/test_compile.py catches its
        # change). Imported here: importing Dynamo takes a second that a run without compile need not pay.
        from torch._dynamo.utils import counters

        self.counters = counters
        self.graphs = 0
        self.warned = False

    def __call__(
        self, tensors: Tensor, targets: dict[str, Tensor] | None = None, return_aux_maps: bool = False
    ) -> tuple:
        torch._dynamo.maybe_mark_dynamic(tensors, (2, 3))
        for target in (targets or {}).values():
            torch._dynamo.maybe_mark_dynamic(target, (1, 2))
        before = self.counters["stats"]["unique_graphs"]
        outputs = self.compiled(tensors, targets, return_aux_maps)
        if new := self.counters["stats"]["unique_graphs"] - before:
            self.graphs += new
            mode = "training" if torch.is_grad_enabled() else "inference"
            shape = tuple(tensors.shape)
            log.info("compiled the dense part (graph %d, %s, batch %s)", self.graphs, mode, shape)
        limit = torch.compiler.config.recompile_limit
        if self.graphs >= limit and not self.warned:
            self.warned = True
            warnings.warn(
                f"the dense part has been compiled {self.graphs} times (torch.compiler.config."
                "recompile_limit); Dynamo runs new kinds of input eagerly from now on (TORCH_LOGS=recompiles "
                "gives the reasons)",
                stacklevel=2,
            )
        return outputs


def compile_dense_(
    model: DATNet,
    dynamic: bool = True,
    mode: str | None = None,
    backend: str | Callable = "inductor",
    fullgraph: bool = False,
    cache_dir: str | Path | None = None,
) -> DATNet:
    """Compiles ``model.dense_features`` in place and returns ``model``.

    The compiled region is everything dense and shape-regular in Fig. 2: the ResNet-FPN pyramid P2..P6
    (Fig. 2a), the DT and semantic heads (Sec. 3.3) with, in training, their per-pixel logits and focal
    losses (Sec. 3.1, eqs. 1-3) or, on request, their softmax maps, and the feature fusion into the pyramid
    (Fig. 2b). Its output is the fused pyramid (an ordered dict) with the auxiliary losses and maps. The RPN
    and ROI heads (data-dependent shapes, NMS) stay eager. Training and inference both use the compiled
    function (one graph per mode, :class:`CompiledDenseFeatures`).

    ``dynamic=True`` traces the image size and the batch size symbolically, so that batches of other (padded)
    sizes, e.g. multi-scale training, reuse the graph instead of recompiling. ``mode`` and ``backend`` go to
    ``torch.compile`` (``mode`` only applies to ``inductor``); ``fullgraph=True`` makes a graph break an
    error. ``cache_dir`` (e.g. the run directory's ``compile_cache``) becomes Inductor's cache
    (``TORCHINDUCTOR_CACHE_DIR``, unless already set), so that a requeued or resumed run reuses the kernels
    and graphs compiled before. The bound method is compiled, not a submodule wrapped, so parameter names and
    the state dict are unchanged; a deep copy or pickle of the model drops the compiled function and runs
    eagerly.
    """
    if not isinstance(model, DATNet):
        raise TypeError(f"compile_dense_ expects a DATNet, got {type(model).__name__}")
    if cache_dir is not None:
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(cache_dir).resolve()))
    model._compiled_dense_features = CompiledDenseFeatures(
        model.dense_features, fullgraph=fullgraph, dynamic=dynamic, backend=backend, mode=mode
    )
    return model
