"""Box formats and overlaps.

Inside the model boxes are normalised ``(cx, cy, w, h)``; post-processing and the losses' IoU terms use corner
form ``(x1, y1, x2, y2)``. Function names say which format they take and return.
"""

from __future__ import annotations

import torch
from torch import Tensor


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(..., 4) centre form -> (..., 4) corner form."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(..., 4) corner form -> (..., 4) centre form."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)


def _area(boxes_xyxy: Tensor) -> Tensor:
    return (boxes_xyxy[..., 2] - boxes_xyxy[..., 0]) * (boxes_xyxy[..., 3] - boxes_xyxy[..., 1])


def box_iou(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise IoU and union of corner-form boxes: (N, 4) x (M, 4) -> (N, M), (N, M)."""
    area1, area2 = _area(boxes1), _area(boxes2)
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return inter / union, union


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise generalised IoU of corner-form boxes: (N, 4) x (M, 4) -> (N, M).

    Degenerate boxes (x2 < x1) give meaningless values rather than an error: the training loss must not stop on
    one bad prediction, and the matcher's cost only needs to be finite.
    """
    iou, union = box_iou(boxes1, boxes2)
    lt = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    enclosing = wh[..., 0] * wh[..., 1]
    return iou - (enclosing - union) / enclosing


def elementwise_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of matching rows of two corner-form box sets: (N, 4) x (N, 4) -> (N,)."""
    lt = torch.max(boxes1[..., :2], boxes2[..., :2])
    rb = torch.min(boxes1[..., 2:], boxes2[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = _area(boxes1) + _area(boxes2) - inter
    return inter / union


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Logit with both sides clamped at ``eps``, so boxes touching 0 or 1 stay finite."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))
