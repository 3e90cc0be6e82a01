"""Box formats and overlaps of tensors: the one implementation the model, the loss and export use.

Inside the model boxes are normalised ``(cx, cy, w, h)``; post-processing and the losses' IoU terms use corner
form ``(x1, y1, x2, y2)``. Function names say which format they take and return.

Format changes and pairwise (N x M) overlaps are ``torchvision.ops``' own functions. Their arithmetic is, operation
for operation, that of the original repository's ``src/zoo/dfine/box_ops.py: box_iou, generalized_box_iou``, so the
values are the same to the bit in float32 and float64 (the loss runs in float32); unlike the original they do not
assert on degenerate boxes (x2 < x1). For half-precision input torchvision upcasts the products to float32.

Element-wise overlaps (row i of one set with row i of the other, what the loss needs for matched pairs) are ours:
torchvision has only the pairwise matrix, whose diagonal would cost M² memory, and ``generalized_box_iou_loss``,
which adds an epsilon and masks the intersection, so its values and its gradients on touching boxes differ.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision import ops as tv_ops

__all__ = [
    "box_cxcywh_to_xyxy",
    "box_iou",
    "box_xyxy_to_cxcywh",
    "elementwise_box_iou",
    "elementwise_generalized_box_iou",
    "generalized_box_iou",
    "inverse_sigmoid",
]


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(..., 4) centre form -> (..., 4) corner form."""
    return tv_ops.box_convert(boxes, in_fmt="cxcywh", out_fmt="xyxy")


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(..., 4) corner form -> (..., 4) centre form."""
    return tv_ops.box_convert(boxes, in_fmt="xyxy", out_fmt="cxcywh")


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU of corner-form boxes: (N, 4) x (M, 4) -> (N, M)."""
    return tv_ops.box_iou(boxes1, boxes2)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise generalised IoU (Rezatofighi et al., CVPR 2019) of corner-form boxes: (N, 4) x (M, 4) -> (N, M).

    Degenerate boxes (x2 < x1) give meaningless values rather than an error: the training loss must not stop on
    one bad prediction, and the matcher's cost only needs to be finite.
    """
    return tv_ops.generalized_box_iou(boxes1, boxes2)


def _area(boxes_xyxy: Tensor) -> Tensor:
    return (boxes_xyxy[..., 2] - boxes_xyxy[..., 0]) * (boxes_xyxy[..., 3] - boxes_xyxy[..., 1])


def _elementwise_inter_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    lt = torch.max(boxes1[..., :2], boxes2[..., :2])
    rb = torch.min(boxes1[..., 2:], boxes2[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter, _area(boxes1) + _area(boxes2) - inter


def elementwise_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of matching rows of two corner-form box sets: (..., 4) x (..., 4) -> (...)."""
    inter, union = _elementwise_inter_union(boxes1, boxes2)
    return inter / union


def elementwise_generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Generalised IoU of matching rows of two corner-form box sets: (..., 4) x (..., 4) -> (...).

    The values are those on the diagonal of :func:`generalized_box_iou`, to the bit.
    """
    inter, union = _elementwise_inter_union(boxes1, boxes2)
    hull_wh = (torch.max(boxes1[..., 2:], boxes2[..., 2:]) - torch.min(boxes1[..., :2], boxes2[..., :2])).clamp(min=0)
    hull = hull_wh[..., 0] * hull_wh[..., 1]
    return inter / union - (hull - union) / hull


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Logit with both sides clamped at ``eps``, so boxes touching 0 or 1 stay finite."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))
