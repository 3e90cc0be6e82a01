"""Box overlaps of NumPy arrays, for the parts of dfine that run without PyTorch.

The confusion matrix of a validation report (:mod:`dfine.engine.analysis`), the merging of tiled predictions
(:mod:`dfine.predict.tiling`) and the placement of objects in the synthetic data set (:mod:`dfine.data.synthetic`)
work on NumPy arrays and must not import torch; they share these functions. The tensor versions, for the model and
the loss, are in :mod:`dfine.ops.boxes`. Boxes are corner form ``(x1, y1, x2, y2)``; a box with ``x2 < x1`` has
area 0.
"""

from __future__ import annotations

import numpy as np

__all__ = ["box_areas", "intersection_areas", "iou_matrix"]


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """Areas of (N, 4) boxes -> (N,); inverted sides count as 0."""
    return np.clip(boxes[:, 2:] - boxes[:, :2], 0, None).prod(axis=1)


def intersection_areas(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Area shared by every box of ``boxes1`` (N, 4) with every box of ``boxes2`` (M, 4) -> (N, M)."""
    top_left = np.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = np.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    return np.clip(bottom_right - top_left, 0, None).prod(axis=2)


def iou_matrix(boxes1: np.ndarray, boxes2: np.ndarray, crowd: bool = False) -> np.ndarray:
    """IoU of every box of ``boxes1`` (N, 4) with every box of ``boxes2`` (M, 4) -> (N, M), 0 where the union is 0.

    With ``crowd``, the intersection over the area of ``boxes1``'s box alone: how COCO scores a detection against
    a crowd region (pycocotools' ``maskUtils.iou`` with ``iscrowd``).
    """
    inter = intersection_areas(boxes1, boxes2)
    area1 = box_areas(boxes1)
    union = area1[:, None] if crowd else area1[:, None] + box_areas(boxes2)[None, :] - inter
    union = np.broadcast_to(union, inter.shape)
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
