"""Exported against eager detections: the same number per image, the same labels, and how far apart the
boxes, scores and mask probabilities are."""

from torch import Tensor

BOX_TOLERANCE = 0.01  # pixels


def largest_difference(eager: list[dict[str, Tensor]], exported: list[dict[str, Tensor]], key: str) -> float:
    """The largest absolute difference of ``key`` over the images with as many detections each way."""
    return max(
        (
            (e[key] - x[key].to(e[key].dtype)).abs().max().item()
            for e, x in zip(eager, exported, strict=True)
            if key in e and len(e[key]) == len(x[key]) and len(e[key])
        ),
        default=0.0,
    )


def compare_detections(
    eager: list[dict[str, Tensor]], exported: list[dict[str, Tensor]], box_tolerance: float = BOX_TOLERANCE
) -> dict:
    """A summary of the detections of the same images each way (dicts of ``boxes``, ``labels``, ``scores``
    and maybe ``masks``, in the model's order, by score): detections in all, images whose count or labels
    differ, the largest box (px), score and mask-probability differences (over the images with equal counts;
    ``max_mask_prob_diff`` None without masks), and ``match``: every count and label equal and every box
    within ``box_tolerance`` pixels."""
    other_count = sum(len(e["boxes"]) != len(x["boxes"]) for e, x in zip(eager, exported, strict=True))
    other_labels = sum(
        len(e["labels"]) == len(x["labels"]) and not e["labels"].equal(x["labels"].to(e["labels"].dtype))
        for e, x in zip(eager, exported, strict=True)
    )
    box_diff = largest_difference(eager, exported, "boxes")
    has_masks = bool(eager) and "masks" in eager[0]
    return {
        "images": len(eager),
        "detections_eager": sum(len(e["boxes"]) for e in eager),
        "detections_exported": sum(len(x["boxes"]) for x in exported),
        "images_with_other_count": other_count,
        "images_with_other_labels": other_labels,
        "max_box_diff_px": box_diff,
        "max_score_diff": largest_difference(eager, exported, "scores"),
        "max_mask_prob_diff": largest_difference(eager, exported, "masks") if has_masks else None,
        "match": other_count == 0 and other_labels == 0 and box_diff <= box_tolerance,
    }
