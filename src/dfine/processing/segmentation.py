"""From D-FINE-seg outputs to instances with masks, and masks as COCO run-length encodings.

The post-processing follows D-FINE-seg 0.6.2's inference wrapper (``TorchModel._preds_postprocess``,
``process_masks`` and ``cleanup_masks`` in ``dfine_seg/infer/torch_model.py``): top-k (query, class) pairs by sigmoid
score, boxes clipped to the image, optional class-agnostic NMS, then each kept query's mask probabilities (the
sigmoid applied *before* resizing) bilinearly resized once to the image size, thresholded, and zeroed outside the
instance's box.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dfine.ops.boxes import box_cxcywh_to_xyxy
from dfine.processing.detections import output_edge_uncertainty, top_k_pairs

__all__ = ["MASK_STRIDE", "crop_to_boxes", "post_process_instances"]

# Masks resized at once: bounds the float temporaries at the image size (the kept masks are booleans).
_RESIZE_CHUNK = 16

# How many pixels the network's mask logits are apart: the pixel decoder works at 1/4 of the input size.
MASK_STRIDE = 4


def _outputs(outputs: Any) -> tuple[Tensor, Tensor, Tensor]:
    if isinstance(outputs, Mapping):
        get = outputs.get
    else:
        def get(name: str) -> Any:
            return getattr(outputs, name, None)
    logits, boxes, masks = get("logits"), get("pred_boxes"), get("pred_masks")
    if masks is None:
        raise ValueError("outputs have no pred_masks: instance segmentation needs a DFineForInstanceSegmentation "
                         "model (use post_process_object_detection for boxes only)")
    if logits is None or boxes is None:
        raise ValueError("outputs need logits and pred_boxes beside pred_masks")
    if masks.dim() != 4 or masks.shape[:2] != logits.shape[:2]:
        raise ValueError(f"pred_masks of shape {tuple(masks.shape)} do not match logits of shape "
                         f"{tuple(logits.shape)}: expected (B, Q, H/4, W/4)")
    return logits, boxes, masks


def _image_sizes(target_sizes: Any, masks: Tensor) -> list[tuple[int, int]]:
    """(height, width) per image: ``target_sizes``, or the network's input size (4× the mask size)."""
    batch = masks.shape[0]
    if target_sizes is None:
        return [(masks.shape[-2] * MASK_STRIDE, masks.shape[-1] * MASK_STRIDE)] * batch
    sizes = torch.as_tensor(np.asarray(target_sizes) if not isinstance(target_sizes, Tensor) else target_sizes)
    if sizes.ndim != 2 or sizes.shape != (batch, 2):
        raise ValueError(f"target_sizes must hold one (height, width) per image: {batch} expected")
    return [(int(h), int(w)) for h, w in sizes.tolist()]


def crop_to_boxes(masks: Tensor, boxes: Tensor) -> Tensor:
    """``masks`` (K, H, W) with every pixel outside its own box (K, 4) absolute (x1, y1, x2, y2) set to 0.

    Pixel (x, y) stays when ``x1 <= x < x2`` and ``y1 <= y < y2`` (integer pixel indices against float boxes), as
    ``cleanup_masks`` of D-FINE-seg. Column and row tests are applied separately, so no (K, H, W) index is built.
    """
    height, width = masks.shape[-2:]
    xs = torch.arange(width, device=masks.device, dtype=boxes.dtype)
    ys = torch.arange(height, device=masks.device, dtype=boxes.dtype)
    x1, y1, x2, y2 = boxes[:, 0, None], boxes[:, 1, None], boxes[:, 2, None], boxes[:, 3, None]
    inside_x = (xs >= x1) & (xs < x2)  # (K, W)
    inside_y = (ys >= y1) & (ys < y2)  # (K, H)
    return masks & inside_y[:, :, None] & inside_x[:, None, :]


def _masks_at(probabilities: Tensor, size: tuple[int, int], mask_threshold: float) -> Tensor:
    """(K, h, w) probabilities -> (K, H, W) booleans: one bilinear resize (align_corners=False), then ``>=``."""
    if probabilities.shape[0] == 0:
        return torch.zeros((0, *size), dtype=torch.bool, device=probabilities.device)
    chunks = []
    for chunk in probabilities.split(_RESIZE_CHUNK):
        resized = F.interpolate(chunk[None], size=size, mode="bilinear", align_corners=False)[0]
        chunks.append(resized >= mask_threshold)
    return torch.cat(chunks)


def post_process_instances(outputs: Any, threshold: float = 0.5, target_sizes: Any = None,
                           mask_threshold: float = 0.5, nms_threshold: float | None = 0.7,
                           top_k: int | None = None, return_uncertainty: bool = False) -> list[dict[str, Tensor]]:
    """Raw outputs of :class:`~dfine.model.segmentation.DFineForInstanceSegmentation` -> per-image instances.

    Args:
        outputs: object or dict with ``logits`` (B, Q, C), ``pred_boxes`` (B, Q, 4) normalised (cx, cy, w, h) and
            ``pred_masks`` (B, Q, H/4, W/4) logits.
        threshold: keep (query, class) pairs whose sigmoid score is strictly greater (as
            ``post_process_object_detection``).
        target_sizes: (height, width) per image (a list of pairs or a (B, 2) tensor/array): boxes in pixels and
            masks at that size. ``None``: boxes normalised to [0, 1], masks at the network's input size.
        mask_threshold: a pixel belongs to the instance when its resized probability is at least this.
        nms_threshold: IoU above which a lower-scored instance is dropped, whatever its class (D-FINE-seg's default
            0.7); ``None`` keeps every pair above ``threshold``, as the detection post-processing does.
        top_k: candidate pairs per image before thresholding (default Q).
        return_uncertainty: also ``edge_uncertainty`` (K, 4), the σ of each box edge in the boxes' units, and
            ``uncertainty`` (K,) (:mod:`dfine.ops.uncertainty`); the outputs must carry ``edge_uncertainty``
            (``model(..., output_uncertainty=True)``), as for ``post_process_object_detection``.

    Returns:
        One dict per image: ``scores`` (K,), ``labels`` (K,) int64, ``boxes`` (K, 4) (x1, y1, x2, y2) clipped to
        the image, ``masks`` (K, H, W) bool, best score first.
    """
    from torchvision.ops import nms

    from dfine.ops.uncertainty import box_uncertainty

    logits, pred_boxes, pred_masks = _outputs(outputs)
    _, num_queries, num_classes = logits.shape
    if top_k is not None and (not isinstance(top_k, numbers.Integral) or isinstance(top_k, bool) or top_k <= 0):
        raise ValueError(f"top_k must be a positive integer (candidates per image) or None, got {top_k!r}")
    if not 0.0 <= mask_threshold <= 1.0:
        raise ValueError(f"mask_threshold must be a probability in [0, 1], got {mask_threshold!r}")
    sizes = _image_sizes(target_sizes, pred_masks)
    k = min(num_queries if top_k is None else int(top_k), num_queries * num_classes)
    # float32 whatever the model ran in: half precision cannot place a box edge to the pixel in a large image
    pred_boxes, pred_masks = pred_boxes.float(), pred_masks.float()
    scores, labels, queries = top_k_pairs(logits, k)
    edges = output_edge_uncertainty(outputs, logits.shape).float() if return_uncertainty else None
    results = []
    for b, (height, width) in enumerate(sizes):
        keep = scores[b] > threshold
        image_scores, image_labels, image_queries = scores[b][keep], labels[b][keep], queries[b][keep]
        scale = pred_boxes.new_tensor([width, height, width, height])
        boxes = box_cxcywh_to_xyxy(pred_boxes[b, image_queries]) * scale
        boxes = torch.minimum(boxes.clamp(min=0), scale)
        if nms_threshold is not None and len(boxes):
            order = nms(boxes.float(), image_scores.float(), float(nms_threshold))
            image_scores, image_labels, image_queries, boxes = (image_scores[order], image_labels[order],
                                                                image_queries[order], boxes[order])
        masks = _masks_at(pred_masks[b, image_queries].sigmoid(), (height, width), mask_threshold)
        masks = crop_to_boxes(masks, boxes)
        result = {"scores": image_scores, "labels": image_labels, "boxes": boxes, "masks": masks}
        if edges is not None:
            result["edge_uncertainty"] = edges[b, image_queries] * scale
            result["uncertainty"] = box_uncertainty(result["edge_uncertainty"], boxes)
        if target_sizes is None:
            result["boxes"] = boxes / scale
            if edges is not None:
                result["edge_uncertainty"] = result["edge_uncertainty"] / scale
        results.append(result)
    return results
