"""Losses of the dense auxiliary heads (Sec. 3.1, eqs. 1-2) and the upsampling that takes them to the image's
resolution."""

import torch
import torch.nn.functional as F
from torch import Tensor

from datnet.contract import IGNORE


def dense_focal_loss(
    logits: Tensor,
    target: Tensor,
    background_alpha: float = 0.2,
    gamma: float = 2.0,
    ignore_index: int = IGNORE,
) -> Tensor:
    """Per-pixel focal variant of the cross entropy, averaged over pixels (eqs. 1 and 2).

    ``L_i = -alpha_t (1 - p_t)^gamma log p_t`` where ``t`` is the target class of pixel ``i``, ``p`` the
    softmax over the class dimension and ``alpha_t`` is ``background_alpha`` for class 0 and 1 otherwise.
    Eq. 2 averages over the B*W*H pixels; here pixels labelled ``ignore_index`` (crowd and void regions, the
    batch's padding) are excluded from the average: they add nothing to the sum and are not counted in the
    divisor, which is the number of labelled pixels (B*W*H when nothing is ignored). A batch with no
    labelled pixel gives 0 (with a gradient).

    Args:
        logits: ``(B, K, H, W)`` unnormalised scores.
        target: ``(B, H, W)`` integer labels in ``[0, K)`` or ``ignore_index``.
    """
    if logits.shape[-2:] != target.shape[-2:] or logits.shape[0] != target.shape[0]:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match")
    target = target.long()
    valid = target != ignore_index
    safe_target = torch.where(valid, target, torch.zeros_like(target))
    log_p = F.log_softmax(logits.float(), dim=1)
    log_pt = log_p.gather(1, safe_target.unsqueeze(1)).squeeze(1)
    alpha = torch.where(safe_target == 0, background_alpha, 1.0)
    loss = -alpha * (1.0 - log_pt.exp()) ** gamma * log_pt
    return (loss * valid).sum() / valid.sum().clamp(min=1)


def upsample_logits(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """The heads' stride-4 logits ``(B, K, H/4, W/4)`` resized to ``size`` (the padded image's ``(H, W)``:
    x4) by bilinear interpolation with ``align_corners=False``, in float32, as Panoptic FPN takes its
    semantic loss at the image's resolution (Kirillov et al. [15]; detectron2's ``SemSegFPNHead``)."""
    return F.interpolate(logits.float(), size=tuple(size), mode="bilinear", align_corners=False)
