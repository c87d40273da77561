"""How well the dense auxiliary heads of Sec. 3.1 learn their own tasks, measured at evaluation with
torchmetrics (summed over the ranks at ``compute``).

Per pixel of the targets of the data pipeline (``dt``: the K distance-transform bins, ``sem``: the contiguous
class, 0 background; the ignore label excluded):

* ``aux/dt_acc``: DT-bin accuracy, the fraction of pixels whose bin is right (micro average);
* ``aux/dt_miou``: mean over the DT bins of their intersection over union;
* ``aux/seg_miou``: semantic mean IoU over the classes, background included.

A mean IoU averages the classes present in the targets or the predictions (torchmetrics' ``macro``); with
no pixel to score (e.g. an unannotated test split) the metrics are ``nan``. The heads' per-pixel class is the
argmax of their softmax maps on the targets' grid (the image, or a stride of it): :func:`predicted_labels`.
"""

from collections.abc import Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from datnet.contract import IGNORE


def predicted_labels(maps: Tensor, size: Sequence[int]) -> Tensor:
    """The per-pixel classes ``(H, W)`` of a head's softmax maps ``(C, h, w)`` on a target grid of ``size``:
    the argmax of the maps, brought first to that grid. A finer grid at an integer stride k of theirs
    (``h = ceil(H / k)``, ``w = ceil(W / k)``: the heads' stride-4 maps against image-resolution targets)
    gets the maps upsampled by exactly k (bilinear with the geometry of the loss's upsampling of the logits,
    ``datnet.models.losses.upsample_logits``, but of the softmax probabilities: the argmax can differ from
    the upsampled logits' at class boundaries) and cropped, so that every cell stays over the pixels it
    covers; any other size (e.g. maps of an image the model resized), bilinear resizing to ``size``."""
    height, width = int(size[0]), int(size[1])
    h, w = maps.shape[-2:]
    if (h, w) == (height, width):
        return maps.argmax(0)
    maps = maps[None].float()
    k = -(-height // h)
    if -(-height // k) == h and -(-width // k) == w:
        maps = F.interpolate(maps, scale_factor=k, mode="bilinear", align_corners=False)[..., :height, :width]
    else:
        maps = F.interpolate(maps, size=(height, width), mode="bilinear", align_corners=False)
    return maps[0].argmax(0)


class AuxHeadMetrics(nn.Module):
    """The metrics of the enabled heads: ``dt`` (``num_dt_bins`` bins) and/or ``sem`` (``num_classes``
    classes, background included), pixels labelled ``ignore_index`` left out. A module, so that its states
    follow the LightningModule's device; its states are not saved in checkpoints."""

    def __init__(self, num_dt_bins: int | None, num_classes: int | None, ignore_index: int = IGNORE) -> None:
        super().__init__()
        if not num_dt_bins and not num_classes:
            raise ValueError(
                "AuxHeadMetrics needs the DT head (num_dt_bins) or the semantic head (num_classes)"
            )
        self.collections = nn.ModuleDict()
        if num_dt_bins:
            self.collections["dt"] = MetricCollection(
                {
                    "dt_acc": MulticlassAccuracy(num_dt_bins, average="micro", ignore_index=ignore_index),
                    "dt_miou": MulticlassJaccardIndex(
                        num_dt_bins, average="macro", ignore_index=ignore_index
                    ),
                }
            )
        if num_classes:
            self.collections["sem"] = MetricCollection(
                {"seg_miou": MulticlassJaccardIndex(num_classes, average="macro", ignore_index=ignore_index)}
            )

    @classmethod
    def for_model(cls, model: nn.Module) -> "AuxHeadMetrics | None":
        """The metrics of ``model``'s auxiliary heads (``datnet.models.DATNet.auxiliary``: their output
        channels and ignore label), or None for a model without them (plain Mask R-CNN)."""
        auxiliary = getattr(model, "auxiliary", None)
        if auxiliary is None:
            return None
        channels = {key: head.predictor.out_channels for key, head in auxiliary.heads.items()}
        return cls(channels.get("dt"), channels.get("sem"), auxiliary.ignore_index)

    @property
    def keys(self) -> tuple[str, ...]:
        """The prediction and target keys the metrics read (``dt``, ``sem``)."""
        return tuple(self.collections.keys())

    def update(self, maps: Sequence[Mapping[str, Tensor]], targets: Sequence[Mapping[str, Tensor]]) -> None:
        """Add a batch: per image, the heads' softmax maps ``(C, h, w)`` under ``dt``/``sem`` (the model's
        ``return_aux_maps``) and the target dicts with the per-pixel ``dt``/``sem`` labels ``(H, W)``."""
        if len(maps) != len(targets):
            raise ValueError(f"{len(maps)} auxiliary predictions for {len(targets)} targets")
        for key, collection in self.collections.items():
            for index, (prediction, target) in enumerate(zip(maps, targets, strict=True)):
                if key not in prediction or key not in target:
                    where = "prediction" if key not in prediction else "target"
                    raise KeyError(f"image {index}: no {key!r} map in the {where} for the auxiliary metrics")
                labels = target[key].long()
                collection.update(predicted_labels(prediction[key], labels.shape), labels)

    def compute(self) -> dict[str, float]:
        """``aux/dt_acc``, ``aux/dt_miou`` and/or ``aux/seg_miou`` over everything added on every rank
        (collective under torch.distributed: every rank must call it)."""
        metrics: dict[str, float] = {}
        for collection in self.collections.values():
            metrics.update({f"aux/{name}": float(value) for name, value in collection.compute().items()})
        return metrics

    def reset(self) -> None:
        """Forget everything added."""
        for collection in self.collections.values():
            collection.reset()
