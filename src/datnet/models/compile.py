"""``torch.compile`` of DATNet's dense part (backbone, auxiliary heads and losses, fusion; Fig. 2)."""

from collections.abc import Callable

import torch

from datnet.models.datnet import DATNet


def compile_dense_(
    model: DATNet,
    dynamic: bool = True,
    mode: str | None = None,
    backend: str | Callable = "inductor",
    fullgraph: bool = False,
) -> DATNet:
    """Compiles ``model.dense_features`` in place and returns ``model``.

    The compiled region is everything dense and shape-regular in Fig. 2: the ResNet-FPN pyramid P2..P6
    (Fig. 2a), the DT and semantic heads (Sec. 3.3) with, in training, their per-pixel logits and focal
    losses (Sec. 3.1, eqs. 1-3) or, on request, their softmax maps, and the feature fusion into the pyramid
    (Fig. 2b). Its output is the fused pyramid (an ordered dict) with the auxiliary losses and maps. The RPN
    and ROI heads (data-dependent shapes, NMS) stay eager. Training and inference both use the compiled
    function (one graph per mode).

    ``dynamic=True`` traces the image size and the batch size symbolically, so that batches of other (padded)
    sizes, e.g. multi-scale training, reuse the graph instead of recompiling (a batch of one image, and in
    training a new number of images, compile once more). ``mode`` and ``backend`` go to ``torch.compile``
    (``mode`` only applies to ``inductor``); ``fullgraph=True`` makes a graph break an error. The bound
    method is compiled, not a submodule wrapped, so parameter names and the state dict are unchanged; a deep
    copy or pickle of the model drops the compiled function and runs eagerly.
    """
    if not isinstance(model, DATNet):
        raise TypeError(f"compile_dense_ expects a DATNet, got {type(model).__name__}")
    model._compiled_dense_features = torch.compile(
        model.dense_features, fullgraph=fullgraph, dynamic=dynamic, backend=backend, mode=mode
    )
    return model
