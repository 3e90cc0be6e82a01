"""The mask terms of D-FINE-seg (ArgoHA/D-FINE-seg 0.6.2, Apache-2.0): the box-cropped BCE and Dice losses of matched
queries, and the focal and Dice matching costs of every (query, target) pair.

Both follow ``dfine_seg/model/dfine_criterion.py`` (``DFINECriterion.loss_masks``, ``_cropped_bce_loss``,
``_cropped_dice_loss``) and ``dfine_seg/model/matcher.py`` (``dice_cost``, ``sigmoid_focal_cost``):

- ground-truth masks are bilinearly resized (``align_corners=False``) to the mask logits' ``H/4 × W/4`` and clamped
  to [0, 1]; they stay soft (:func:`resize_target_masks`);
- the losses see only the pixels inside the ground-truth box (integer pixel ``x`` with ``x1 <= x < x2``, the box
  mapped to mask pixels and clamped, :func:`mask_box_region`): BCE summed there and divided by the box area, Dice
  on the cropped prediction and target; each is the mean over the matched instances (no ``num_boxes``);
- the matching costs are dense over the whole map (no crop): ``1 − Dice`` and the pixel mean of a sigmoid focal
  cost (α 0.25, γ 2, the matcher's).

Weights (D-FINE-seg's ``configs.py``, the same for every size): losses 1 and 1, costs 1 and 1; they are constants of
the method like DDF's temperature, not options of a config.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "MASK_COST_WEIGHTS",
    "MASK_LOSS_NAMES",
    "MASK_LOSS_WEIGHTS",
    "cropped_mask_losses",
    "mask_box_region",
    "mask_match_costs",
    "resize_target_masks",
]

#: the mask loss terms and their weights (D-FINE-seg's ``loss_mask_bce`` / ``loss_mask_dice``)
MASK_LOSS_NAMES = ("loss_mask_bce", "loss_mask_dice")
MASK_LOSS_WEIGHTS = {"loss_mask_bce": 1.0, "loss_mask_dice": 1.0}
#: the matching cost weights (D-FINE-seg's ``cost_mask``, the focal cost, and ``cost_mask_dice``)
MASK_COST_WEIGHTS = {"focal": 1.0, "dice": 1.0}

_EPS = 1e-6  # Dice smoothing of both the loss and the cost
_LOG_EPS = 1e-8  # inside the focal cost's logarithms


def resize_target_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """(n, H, W) ground-truth masks (bool, uint8 or float) -> (n, h, w) float32 in [0, 1] at the logits' size.

    Bilinear with ``align_corners=False``, then clamped, not re-binarised (D-FINE-seg's ``_prepare_target_masks``).
    """
    masks = masks.float()
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size))
    if tuple(masks.shape[-2:]) != tuple(size):
        masks = F.interpolate(masks[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return masks.clamp(0.0, 1.0)


def mask_box_region(boxes: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Where each box lies in a mask of ``size`` = (h, w), and its area in mask pixels.

    Args:
        boxes: (M, 4) normalised (cx, cy, w, h).
        size: the mask's (h, w).

    Returns:
        ``inside`` (M, h, w) float32, 1 at integer pixels ``x1 <= x < x2`` and ``y1 <= y < y2`` of the box mapped to
        mask pixels (``x1, y1`` clamped to ``[0, w−1]`` / ``[0, h−1]``, ``x2, y2`` to ``[1, w]`` / ``[1, h]``), and
        ``area`` (M,) = ``max((x2 − x1)(y2 − y1), 1)`` from those clamped coordinates.
    """
    height, width = size
    cx, cy, w, h = boxes.float().unbind(-1)
    x1 = ((cx - w / 2) * width).clamp(0, width - 1)
    y1 = ((cy - h / 2) * height).clamp(0, height - 1)
    x2 = ((cx + w / 2) * width).clamp(1, width)
    y2 = ((cy + h / 2) * height).clamp(1, height)
    xs = torch.arange(width, device=boxes.device, dtype=torch.float32)
    ys = torch.arange(height, device=boxes.device, dtype=torch.float32)
    inside_x = (xs >= x1[:, None]) & (xs < x2[:, None])  # (M, w)
    inside_y = (ys >= y1[:, None]) & (ys < y2[:, None])  # (M, h)
    inside = (inside_y[:, :, None] & inside_x[:, None, :]).float()
    return inside, ((x2 - x1) * (y2 - y1)).clamp(min=1.0)


def cropped_mask_losses(logits: Tensor, targets: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """D-FINE-seg's box-cropped mask BCE and Dice of matched pairs, each the mean over the pairs.

    Args:
        logits: (M, h, w) mask logits of the matched queries.
        targets: (M, h, w) their ground-truth masks at the same size, soft (:func:`resize_target_masks`).
        boxes: (M, 4) their ground-truth boxes, normalised (cx, cy, w, h).

    Returns:
        ``(bce, dice)`` scalars: ``mean_i Σ_inside BCE_i / area_i`` and ``mean_i 1 − (2 Σ σ(P)T + ε) / (Σ σ(P) +
        Σ T + ε)`` over the pixels inside box i; 0 (connected to ``logits``) when ``M`` is 0.
    """
    if logits.shape[0] == 0:
        zero = logits.sum() * 0.0
        return zero, zero
    logits = logits.float()
    inside, area = mask_box_region(boxes, tuple(logits.shape[-2:]))
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    bce = (bce * inside).sum(dim=(1, 2)) / area
    prediction = (logits.sigmoid() * inside).flatten(1)
    truth = (targets * inside).flatten(1)
    dice = 1.0 - (2.0 * (prediction * truth).sum(1) + _EPS) / (prediction.sum(1) + truth.sum(1) + _EPS)
    return bce.mean(), dice.mean()


@torch.no_grad()
def mask_match_costs(logits: Tensor, targets: Tensor, alpha: float, gamma: float) -> tuple[Tensor, Tensor]:
    """Focal and Dice matching costs of every (query, target) pair of a batch, over the full mask.

    With ``p = σ(logit)`` and the soft target ``t`` per pixel (``HW`` pixels)::

        focal(q, j) = Σ_px [α(1−p)^γ(−log(p + 1e-8))·t + (1−α)p^γ(−log(1 − p + 1e-8))·(1−t)] / HW
        dice(q, j)  = 1 − (2 Σ_px p·t + ε) / (Σ_px p + Σ_px t + ε)

    The focal sum is written as ``Σ neg + Σ (pos − neg)·t``: one matrix product per image instead of two, the same
    value up to float rounding.

    Args:
        logits: (B, Q, h, w) mask logits.
        targets: (B, T, h, w) ground-truth masks at that size (padded columns are ignored by the caller).
        alpha, gamma: the matcher's focal α and γ.

    Returns:
        ``(focal, dice)``, each (B, Q, T) float32.
    """
    prob = logits.float().flatten(2).sigmoid()  # (B, Q, HW)
    truth = targets.float().flatten(2)  # (B, T, HW)
    pixels = prob.shape[-1]
    # in place where it can: these (B, Q, HW) maps, several per layer, are most of a segmentation step's matching
    rest = 1 - prob
    neg = (rest + _LOG_EPS).log_().mul_(-(1 - alpha)).mul_(prob.pow(gamma))
    pos = (prob + _LOG_EPS).log_().mul_(-alpha).mul_(rest.pow_(gamma))
    focal = (torch.bmm(pos.sub_(neg), truth.transpose(1, 2)) + neg.sum(-1, keepdim=True)) / pixels
    overlap = torch.bmm(prob, truth.transpose(1, 2))
    dice = 1 - (2 * overlap + _EPS) / (prob.sum(-1)[:, :, None] + truth.sum(-1)[:, None, :] + _EPS)
    return focal, dice
