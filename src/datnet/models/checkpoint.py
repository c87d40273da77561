"""Whole-detector checkpoints (``model.checkpoint``, ``eval.py``, ``predict.py``) loaded into a built model.

A checkpoint is a plain state dict or a Lightning ``.ckpt`` (keys ``model.*`` under ``state_dict``). Three
cases:

- ours (the same architecture and classes): loaded strictly;
- torchvision's COCO-trained detectors (``maskrcnn_resnet50_fpn`` and the like): their predictors have 91
  rows, one per COCO category id 0..90 (ten ids unused, "N/A"), where our model has one per label of the
  dataset (81 for COCO). Each label's rows are taken from the index of its dataset category id
  (``label_to_category_id``; COCO's ids are exactly torchvision's indices), background from index 0, and
  the rest is loaded strictly. The ten unused indices are dropped, so the class softmax runs over 81 logits
  instead of 91: the same detections wherever those ten never fire (a trained model gives them almost no
  probability: they were only ever trained as wrong classes);
- anything else, ``strict=False`` (fine-tuning from another detector): every tensor whose key and shape
  match is loaded, and every missing, unexpected or mis-shaped key is logged.
"""

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

from datnet.models.backbone import load_state_dict_file

log = logging.getLogger(__name__)

# torchvision's COCO detectors: index = COCO category id, 0 = background, ten unused ids "N/A"
TORCHVISION_COCO_NAMES = MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
TORCHVISION_COCO_CLASSES = len(TORCHVISION_COCO_NAMES)  # 91
# predictor tensors with one block of rows per class, and the rows per class
PER_CLASS_ROWS = {
    "roi_heads.box_predictor.cls_score.weight": 1,
    "roi_heads.box_predictor.cls_score.bias": 1,
    "roi_heads.box_predictor.bbox_pred.weight": 4,
    "roi_heads.box_predictor.bbox_pred.bias": 4,
    "roi_heads.mask_predictor.mask_fcn_logits.weight": 1,
    "roi_heads.mask_predictor.mask_fcn_logits.bias": 1,
}
CLASS_KEY = "roi_heads.box_predictor.cls_score.bias"
COUNTER = ".num_batches_tracked"  # BatchNorm's step counter: no weight (``compare_state``)


@dataclass
class CheckpointReport:
    """What loading a checkpoint did: the keys loaded, and those of the checkpoint or the model left out."""

    loaded: int
    missing: list[str] = field(default_factory=list)  # in the model, not in the checkpoint
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, not in the model
    mis_shaped: list[str] = field(default_factory=list)  # in both, shapes differ ("key: file -> model")
    category_mapped: bool = False  # torchvision's 91-index COCO layout mapped onto the dataset's labels

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mis_shaped)

    def lines(self) -> list[str]:
        """Every key left out, one per line, under a heading per kind."""
        out = []
        for title, keys in (
            ("missing (kept as built)", self.missing),
            ("unexpected (ignored)", self.unexpected),
            ("mis-shaped (kept as built)", self.mis_shaped),
        ):
            if keys:
                out.append(f"{len(keys)} {title}:")
                out.extend(f"  {key}" for key in keys)
        return out


def read_model_state(path: str | Path) -> dict[str, Tensor]:
    """The model state dict in ``path``: a plain state dict, or a Lightning checkpoint whose model keys start
    with ``model.`` (the prefix is removed)."""
    state = load_state_dict_file(path)
    if state and all(k.startswith("model.") for k in state):
        state = {k[len("model.") :]: v for k, v in state.items()}
    return state


def is_torchvision_coco_layout(state: Mapping[str, Tensor], model_state: Mapping[str, Tensor]) -> bool:
    """Whether ``state``'s class predictors have torchvision's 91 COCO indices where the model has another
    number of classes."""
    if CLASS_KEY not in state or CLASS_KEY not in model_state:
        return False
    return len(state[CLASS_KEY]) == TORCHVISION_COCO_CLASSES != len(model_state[CLASS_KEY])


def map_coco_categories(
    state: Mapping[str, Tensor],
    label_to_category_id: Mapping[int, int],
    num_classes: int,
    path: str | Path,
    class_names: Sequence[str] | None = None,
) -> dict[str, Tensor]:
    """``state`` with its per-class predictor rows in the model's label order: label 0 (background) from
    index 0, label ``l`` from index ``label_to_category_id[l]`` (torchvision's index = COCO category id).
    With the dataset's ``class_names`` (index = label), each must be torchvision's name of that index, so
    that a dataset whose ids are not COCO's (VOC: 1 = aeroplane) is refused rather than mapped wrongly."""
    labels = list(range(1, num_classes))
    if sorted(label_to_category_id) != labels:
        raise ValueError(
            f"{path}: mapping torchvision's COCO indices needs a category id for each of the model's labels "
            f"1..{num_classes - 1}; got labels {sorted(label_to_category_id)}"
        )
    rows = [0] + [int(label_to_category_id[label]) for label in labels]
    outside = sorted({r for r in rows if not 0 < r < TORCHVISION_COCO_CLASSES} - {0})
    if outside:
        raise ValueError(
            f"{path} has torchvision's COCO layout (indices = COCO category ids 1..90), but the dataset's "
            f"category ids {outside} are not among them: load it with model.checkpoint_strict=false instead"
        )
    if class_names is not None:
        wrong = [
            f"{label} {class_names[label]!r} (id {rows[label]}: {TORCHVISION_COCO_NAMES[rows[label]]!r})"
            for label in labels
            if class_names[label] != TORCHVISION_COCO_NAMES[rows[label]]
        ]
        if wrong:
            raise ValueError(
                f"{path} has torchvision's COCO layout, but the dataset's categories are not COCO's: "
                f"{', '.join(wrong)}; load it with model.checkpoint_strict=false instead"
            )
    mapped = dict(state)
    for key, per_class in PER_CLASS_ROWS.items():
        if key in state:
            index = torch.tensor([r * per_class + i for r in rows for i in range(per_class)])
            mapped[key] = state[key].index_select(0, index)
    return mapped


def compare_state(state: Mapping[str, Tensor], own: Mapping[str, Tensor]) -> CheckpointReport:
    """Which tensors of ``state`` fit the model state ``own`` (same key, same shape), and which keys do not.

    BatchNorm's ``num_batches_tracked`` counters are no weights and are left out of the comparison: frozen
    BatchNorm (torchvision's detectors with pretrained weights, ours) has none, trainable BatchNorm has one
    per layer; a checkpoint from one loads into the other."""
    state = {k: v for k, v in state.items() if not k.endswith(COUNTER)}
    own = {k: v for k, v in own.items() if not k.endswith(COUNTER)}
    mis_shaped = [k for k, v in state.items() if k in own and v.shape != own[k].shape]
    unexpected = [k for k in state if k not in own]
    return CheckpointReport(
        loaded=len(state) - len(mis_shaped) - len(unexpected),
        missing=sorted(set(own) - set(state)),
        unexpected=sorted(unexpected),
        mis_shaped=sorted(f"{k}: {tuple(state[k].shape)} -> {tuple(own[k].shape)}" for k in mis_shaped),
    )


def load_model_checkpoint(
    model: nn.Module,
    path: str | Path,
    strict: bool = True,
    label_to_category_id: Mapping[int, int] | None = None,
    class_names: Sequence[str] | None = None,
) -> CheckpointReport:
    """Loads the whole-model checkpoint ``path`` into ``model`` (module docstring): torchvision's 91-index
    COCO predictors are mapped to the model's labels by ``label_to_category_id`` (the data module's; its
    ``class_names``, when given, must be torchvision's names of those COCO ids). Every
    tensor of the model must come from the checkpoint and every tensor of the checkpoint must be used, or
    ``strict`` raises naming each key left out; with ``strict=False`` the matching tensors are loaded and
    each key left out is logged."""
    state = read_model_state(path)
    own = model.state_dict()
    torchvision_coco = is_torchvision_coco_layout(state, own)
    mapped = torchvision_coco and label_to_category_id is not None
    if mapped:
        state = map_coco_categories(state, label_to_category_id, len(own[CLASS_KEY]), path, class_names)
        log.info("%s: torchvision's 91 COCO indices mapped to the dataset's category ids", path)
    elif torchvision_coco and strict:
        raise ValueError(
            f"{path} has torchvision's 91-index COCO category layout: mapping it onto the model's "
            f"{len(own[CLASS_KEY])} classes needs the dataset's category ids (train.py, eval.py and "
            f"predict.py pass them), or load it with model.checkpoint_strict=false (the class predictors are "
            f"then left as built)"
        )
    report = compare_state(state, own)
    report.category_mapped = mapped
    details = "".join(f"\n{line}" for line in report.lines())
    if strict and not report.complete:
        raise ValueError(
            f"{path} does not match the model (model.checkpoint_strict=true):{details}\n"
            f"model.checkpoint_strict=false loads the {report.loaded} matching tensors and leaves the others "
            f"as built"
        )
    matching = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(matching, strict=False)
    if report.complete:
        log.info("%s: all %d tensors loaded", path, report.loaded)
    else:
        log.warning("%s loaded non-strictly: %d tensors%s", path, report.loaded, details)
    return report
