"""From raw model outputs to detections: the top-k selection shared by the processor and the exported graphs, the
softmax variant, and COCO results records (with run-length encoded masks for instance segmentation)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["mask_to_rle", "output_edge_uncertainty", "softmax_detections", "split_uncertainty", "to_coco_results",
           "top_k_detections", "top_k_pairs"]


def top_k_pairs(logits: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(scores, labels, query_index)``, each (B, k): the ``k`` best (query, class) pairs of each image by sigmoid
    score, best first (see :func:`top_k_detections`)."""
    num_classes = logits.shape[-1]
    scores, flat_index = torch.topk(logits.sigmoid().flatten(1), k, dim=1)
    return scores, flat_index % num_classes, flat_index // num_classes


def top_k_detections(logits: Tensor, boxes: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(scores, labels, boxes)`` of the ``k`` best (query, class) pairs of each image, best first.

    The selection of the checkpoints' post-processor, shared by
    :meth:`DFineImageProcessor.post_process_object_detection` and the exported graphs (:mod:`dfine.export.postprocess`):
    sigmoid scores, top-k over the flattened (query, class) grid (index = query · C + class), so one query can appear
    with several classes.

    Args:
        logits: (B, Q, C) class logits.
        boxes: (B, Q, D) per-query boxes in any format; the selected queries' rows are returned.
        k: pairs kept per image (at most Q · C).
    """
    scores, labels, query_index = top_k_pairs(logits, k)
    boxes = boxes.gather(1, query_index.unsqueeze(-1).expand(-1, -1, boxes.shape[-1]))
    return scores, labels, boxes


def softmax_detections(logits: Tensor, boxes: Tensor, top_k: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """``use_focal_loss=False``: each query's best class under a softmax whose last column is "no object".

    Queries stay in their order (as transformers); a ``top_k`` below Q keeps the best ``top_k`` queries, best first.
    """
    if logits.shape[-1] < 2:
        raise ValueError("use_focal_loss=False needs at least 2 logits per query (classes + 'no object')")
    # Softmax over the class axis. transformers calls softmax without dim=, which for 3-D logits normalises over
    # the batch axis instead (every score is 1.0 for a batch of one): we do what its docstring describes.
    scores, labels = logits.softmax(dim=-1)[..., :-1].max(dim=-1)
    if top_k is not None and top_k < scores.shape[1]:
        scores, index = torch.topk(scores, int(top_k), dim=-1)
        labels = labels.gather(1, index)
        boxes = boxes.gather(1, index.unsqueeze(-1).expand(-1, -1, boxes.shape[-1]))
    return scores, labels, boxes


def output_edge_uncertainty(outputs: Any, shape: Sequence[int]) -> Tensor:
    """The ``edge_uncertainty`` (B, Q, 4) of model outputs (an object or a dict) whose ``logits`` have ``shape``.

    Raises:
        ValueError: the outputs have none (the model was run without ``output_uncertainty=True``), or the wrong shape.
    """
    edges = outputs.get("edge_uncertainty") if isinstance(outputs, Mapping) else getattr(outputs, "edge_uncertainty",
                                                                                         None)
    if edges is None:
        raise ValueError("return_uncertainty=True needs outputs with edge_uncertainty: run the model with "
                         "output_uncertainty=True (a deployed model: set_uncertainty())")
    if tuple(edges.shape) != (shape[0], shape[1], 4):
        raise ValueError(f"edge_uncertainty must be (batch, queries, 4) = ({shape[0]}, {shape[1]}, 4), got "
                         f"{tuple(edges.shape)}")
    return edges


def split_uncertainty(result: dict[str, Tensor]) -> dict[str, Tensor]:
    """A detection dict whose ``boxes`` carry the edges' σ as columns 4..7 -> ``boxes`` (N, 4), ``edge_uncertainty``
    (N, 4) and ``uncertainty`` (N,) (:func:`dfine.ops.uncertainty.box_uncertainty`)."""
    from dfine.ops.uncertainty import box_uncertainty

    boxes, edges = result["boxes"][:, :4], result["boxes"][:, 4:]
    return {**result, "boxes": boxes, "edge_uncertainty": edges, "uncertainty": box_uncertainty(edges, boxes)}


def to_coco_results(
    results: Sequence[Mapping[str, Tensor]],
    image_ids: Sequence[int],
    label_to_category: Mapping[int, int] | Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Convert post-processed detections into COCO "results" format (what ``COCO.loadRes`` reads).

    Args:
        results: per-image dicts from :meth:`DFineImageProcessor.post_process_object_detection` with absolute
            (x1, y1, x2, y2) boxes (pass ``target_sizes``), or from ``post_process_instance_segmentation``, whose
            ``masks`` become each record's ``segmentation`` (COCO RLE, see :func:`mask_to_rle`).
        image_ids: the COCO image id of each result.
        label_to_category: model label -> COCO category id (a dict or a list indexed by label). ``None`` uses the
            label itself (our data sets number categories 0..C-1).

    Returns:
        A flat list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` (plus ``"segmentation"``
        for results with masks) with plain Python numbers.
    """
    if len(results) != len(image_ids):
        raise ValueError(f"{len(results)} results but {len(image_ids)} image ids")
    detections: list[dict[str, Any]] = []
    for result, image_id in zip(results, image_ids):
        boxes = torch.as_tensor(result["boxes"]).detach().cpu().double().reshape(-1, 4)
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        labels = torch.as_tensor(result["labels"]).detach().cpu().reshape(-1).tolist()
        scores = torch.as_tensor(result["scores"]).detach().cpu().double().reshape(-1).tolist()
        segmentations = mask_to_rle(result["masks"]) if "masks" in result else [None] * len(scores)
        for box, label, score, segmentation in zip(xywh, labels, scores, segmentations, strict=True):
            label = int(label)
            if label_to_category is None:
                category = label
            else:
                try:
                    category = int(label_to_category[label])
                except (KeyError, IndexError):
                    raise ValueError(f"label {label} has no category id in label_to_category") from None
            record = {"image_id": int(image_id), "category_id": category, "bbox": box, "score": float(score)}
            if segmentation is not None:
                record["segmentation"] = segmentation
            detections.append(record)
    return detections


def mask_to_rle(masks: Tensor | np.ndarray) -> list[dict[str, Any]]:
    """COCO run-length encodings ``{"size": [H, W], "counts": str}`` of (K, H, W) binary masks: the
    ``segmentation`` of COCO results records, encoded by faster-coco-eval (pycocotools' format, JSON-ready)."""
    from faster_coco_eval.core import mask as coco_mask

    array = masks.detach().cpu().numpy() if isinstance(masks, Tensor) else np.asarray(masks)
    if array.ndim != 3:
        raise ValueError(f"masks must be (K, H, W), got shape {array.shape}")
    if array.shape[0] == 0:
        return []
    encoded = coco_mask.encode(np.asfortranarray(array.transpose(1, 2, 0).astype(bool).astype(np.uint8)))
    return [{"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in encoded]
