"""Instance masks from an exported segmentation model's ``masks`` output, with NumPy only.

The same post-processing as :func:`dfine.processing.segmentation.post_process_instances` (D-FINE-seg's
``process_masks`` and ``cleanup_masks`` in ``dfine_seg/infer/torch_model.py``, which its ONNX and OpenVINO wrappers
share): boxes clipped to the image, class-agnostic NMS, then each kept instance's probabilities (K, H/4, W/4)
resized once, bilinearly with ``align_corners=False``, to the image size, thresholded, and zeroed outside its box.
The bilinear resize is written out here (PIL's filter smooths when it shrinks, and PyTorch is not available), so a
mask differs from PyTorch's only where a probability rounds to the other side of the threshold.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from dfine.ops.numpy_boxes import iou_matrix

__all__ = ["Instances", "instance_masks", "nms", "resize_bilinear", "segment_image"]

# instances resized at once: bounds the float temporaries at the image size
_CHUNK = 16


def _axis_weights(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of ``target`` output positions: the two source indices and the second one's weight, as
    ``F.interpolate(mode="bilinear", align_corners=False)`` computes them (half-pixel centres, clamped at 0)."""
    position = (np.arange(target, dtype=np.float64) + 0.5) * (source / target) - 0.5
    position = np.maximum(position, 0.0)
    low = np.minimum(np.floor(position).astype(np.int64), source - 1)
    high = np.minimum(low + 1, source - 1)
    return low, high, (position - low).astype(np.float32)


def resize_bilinear(planes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(K, h, w) float -> (K, H, W) float32, bilinear with ``align_corners=False`` (no smoothing when shrinking)."""
    height, width = size
    rows_low, rows_high, row_weight = _axis_weights(planes.shape[1], height)
    cols_low, cols_high, col_weight = _axis_weights(planes.shape[2], width)
    planes = np.asarray(planes, dtype=np.float32)
    rows = planes[:, rows_low] * (1.0 - row_weight)[:, None] + planes[:, rows_high] * row_weight[:, None]
    return rows[:, :, cols_low] * (1.0 - col_weight) + rows[:, :, cols_high] * col_weight


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first: a box overlapping a kept
    better one by IoU above ``iou_threshold`` is dropped (``torchvision.ops.nms``)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    overlaps = iou_matrix(np.asarray(boxes, dtype=np.float64)[order], np.asarray(boxes, dtype=np.float64)[order])
    suppressed = np.zeros(len(order), dtype=bool)
    kept = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        kept.append(i)
        suppressed |= overlaps[i] > iou_threshold
    return order[np.asarray(kept, dtype=np.int64)]


def instance_masks(probabilities: np.ndarray, boxes: np.ndarray, size: tuple[int, int],
                   mask_threshold: float = 0.5) -> np.ndarray:
    """(K, h, w) mask probabilities -> (K, H, W) bool at the image ``size`` = (H, W): resized, ``>= mask_threshold``,
    and only inside each instance's box (K, 4) absolute (x1, y1, x2, y2): pixel (x, y) stays when ``x1 <= x < x2``
    and ``y1 <= y < y2``."""
    height, width = size
    masks = np.zeros((len(probabilities), height, width), dtype=bool)
    xs, ys = np.arange(width), np.arange(height)
    for start in range(0, len(probabilities), _CHUNK):
        chunk = resize_bilinear(probabilities[start:start + _CHUNK], size) >= mask_threshold
        box = np.asarray(boxes[start:start + _CHUNK], dtype=np.float64)
        inside_x = (xs >= box[:, 0, None]) & (xs < box[:, 2, None])
        inside_y = (ys >= box[:, 1, None]) & (ys < box[:, 3, None])
        masks[start:start + len(chunk)] = chunk & inside_y[:, :, None] & inside_x[:, None, :]
    return masks


class Instances(NamedTuple):
    """The instances a segmentation model keeps in one image (:func:`segment_image`)."""

    index: np.ndarray  #: (K,) their positions among the graph's top-k, best first
    boxes: np.ndarray  #: (K, 4) absolute (x1, y1, x2, y2), clipped to the image
    masks: np.ndarray  #: (K, H, W) bool at the image's size


def segment_image(boxes: np.ndarray, scores: np.ndarray, probabilities: np.ndarray, keep: np.ndarray,
                  size_wh: np.ndarray | tuple[int, int], nms_threshold: float = 0.7,
                  mask_threshold: float = 0.5) -> Instances:
    """One image's instances from an exported graph's outputs (``boxes`` (k, 4) absolute, ``scores`` (k,),
    ``probabilities`` (k, h, w) masks, best first), of which ``keep`` (k,) bool passed the score threshold: boxes
    clipped to the ``(width, height)`` image, class-agnostic NMS at ``nms_threshold`` on them, then each kept
    instance's full-size mask, as :func:`dfine.processing.segmentation.post_process_instances` does."""
    width, height = (int(v) for v in size_wh)
    limits = np.array([width, height, width, height], dtype=np.float64)
    candidates = np.flatnonzero(keep)
    clipped = np.minimum(np.maximum(np.asarray(boxes, dtype=np.float64)[candidates], 0.0), limits)
    kept = nms(clipped, np.asarray(scores)[candidates], nms_threshold)
    index = candidates[kept]
    kept_boxes = clipped[kept].astype(np.asarray(boxes).dtype)
    return Instances(index, kept_boxes, instance_masks(np.asarray(probabilities)[index], kept_boxes, (height, width),
                                                       mask_threshold))
