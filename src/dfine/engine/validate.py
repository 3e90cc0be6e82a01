"""One validation pass: model outputs over a loader, post-processed like inference, scored with COCO metrics.

Detections are made exactly as at inference (:meth:`DFineImageProcessor.post_process_object_detection`: sigmoid,
top-``num_queries`` over queries × classes, no NMS, no threshold) and scaled to each image's size on disk, which is
what the original's post-processor does; COCOeval then keeps the best 100 per image.

A segmentation model is also scored on its masks when the ground truth has them (:mod:`dfine.engine.mask_eval`):
its best 100 instances per image as inference makes them (:meth:`DFineImageProcessor.post_process_instance_segmentation`
without threshold or NMS), and the result's ``segm`` holds the mask metrics.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from dfine.engine.evaluator import CocoEvaluator, EvalResult
from dfine.engine.mask_eval import MASK_DETECTIONS_PER_IMAGE, MaskEvaluator, new_mask_evaluator
from dfine.processing.processor import DFineImageProcessor


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    ground_truth: dict[str, Any],
    class_names: Sequence[str],
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
    desc: str = "val",
    evaluator: CocoEvaluator | None = None,
    mask_evaluator: MaskEvaluator | None = None,
    uncertainty: bool = False,
) -> EvalResult:
    """COCO box metrics of ``model`` on the images of ``loader`` (and mask metrics, as ``segm``, for a
    segmentation model on a ground truth with masks).

    Must be called on every rank in a distributed run (each rank scores its shard, then predictions are merged);
    every rank returns the same result.

    Args:
        model: a ``DFineForObjectDetection`` (put in eval mode here and restored afterwards).
        loader: yields ``{"pixel_values": (B, 3, H, W), "labels": [target]}`` with ``image_id`` and ``orig_size``
            (height, width) in each target.
        ground_truth: the COCO-format ground truth (``DetectionDataset.coco_ground_truth()``).
        class_names: names by label, for the per-class table.
        device: where to run the model.
        amp_dtype: autocast dtype (None = full precision).
        progress: show a progress bar.
        desc: progress-bar label.
        evaluator: the evaluator to fill (default: a new one on ``ground_truth``); pass one to read its
            predictions afterwards (:func:`dfine.engine.analysis.write_report`).
        mask_evaluator: the mask evaluator to fill; default: a new one when the model has a mask head and the
            ground truth has segmentations, else none.
        uncertainty: also give the evaluator each detection's box uncertainty (:mod:`dfine.ops.uncertainty`),
            where the model gives it (the training form always; a fast form built with ``uncertainty=True``).
    """
    from tqdm import tqdm

    from dfine.model.detection import DFineForObjectDetection

    was_training = model.training
    model.eval()
    evaluator = evaluator if evaluator is not None else CocoEvaluator(ground_truth, class_names)
    if mask_evaluator is None:
        mask_evaluator = new_mask_evaluator(model, ground_truth, class_names)
    processor = DFineImageProcessor()
    postprocess = processor.post_process_object_detection
    total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
    try:
        for batch in tqdm(loader, desc=desc, total=total, disable=not progress, leave=False, dynamic_ncols=True):
            pixel_values = batch["pixel_values"].to(device, non_blocking=True)
            ask = {"output_uncertainty": True} if uncertainty and isinstance(model, DFineForObjectDetection) else {}
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                outputs = model(pixel_values, **ask)
            sizes = torch.stack([target["orig_size"] for target in batch["labels"]]).to(device)
            raw = {"logits": outputs.logits.float(), "pred_boxes": outputs.pred_boxes.float()}
            edges = getattr(outputs, "edge_uncertainty", None) if uncertainty else None
            if edges is not None:
                raw["edge_uncertainty"] = edges.float()
            # threshold -1 keeps every one of the top-k candidates, as the original's post-processor does
            detections = postprocess(raw, threshold=-1.0, target_sizes=sizes, return_uncertainty=edges is not None)
            evaluator.update({int(target["image_id"]): det for target, det in zip(batch["labels"], detections)})
            masks = getattr(outputs, "pred_masks", None)
            if mask_evaluator is not None and masks is not None:
                _score_masks(processor, mask_evaluator, outputs, batch["labels"], sizes)
    finally:
        model.train(was_training)
    evaluator.synchronize()
    result = evaluator.compute()
    if mask_evaluator is not None:
        mask_evaluator.synchronize()
        result.segm = mask_evaluator.compute()
    return result


def _score_masks(processor: DFineImageProcessor, mask_evaluator: MaskEvaluator, outputs: Any,
                 targets: list[dict[str, Any]], sizes: torch.Tensor) -> None:
    """Each image's best instances, as inference makes them but without threshold or NMS, into ``mask_evaluator``.

    One image at a time: its masks are full-size booleans until the evaluator run-length encodes them, and a whole
    batch of them (100 per image) would hold gigabytes for large images.
    """
    top_k = min(MASK_DETECTIONS_PER_IMAGE, outputs.pred_masks.shape[1])  # COCOeval reads 100 per image
    for b, target in enumerate(targets):
        image = {"logits": outputs.logits[b:b + 1], "pred_boxes": outputs.pred_boxes[b:b + 1],
                 "pred_masks": outputs.pred_masks[b:b + 1]}
        instances = processor.post_process_instance_segmentation(image, threshold=-1.0, target_sizes=sizes[b:b + 1],
                                                                 nms_threshold=None, top_k=top_k)
        mask_evaluator.update({int(target["image_id"]): instances[0]})
