"""COCO mask (``segm``) evaluation of instance segmentation, beside the box evaluation of
:mod:`dfine.engine.evaluator`.

The ground truth is the data set's COCO dict with each object's ``segmentation`` (polygons or RLE in pixels of the
image on disk, :meth:`dfine.data.DetectionDataset.coco_ground_truth`); crowd regions keep their ``iscrowd`` flag, so
COCOeval ignores detections on them, as the official COCO evaluation does (D-FINE-seg's training-time evaluation
drops crowd regions, which makes detections on them false positives). An object's ``area`` (COCO's small / medium /
large ranges) is its mask's pixel count, which is what COCO's own annotation files hold.

Predictions are what inference gives (:func:`dfine.processing.segmentation.post_process_instances`): masks binarised
at 0.5 at the image's size and cropped to their boxes, the best 100 per image (all COCOeval reads), each stored as a
COCO run-length encoding as soon as it arrives, so a validation pass holds no dense mask.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dfine.engine.distributed import all_gather_object
from dfine.engine.evaluator import CocoEvaluator, _to_numpy
from dfine.processing.detections import mask_to_rle

__all__ = ["MASK_DETECTIONS_PER_IMAGE", "MaskEvaluator", "has_segmentations"]

#: detections per image scored for masks: COCOeval's largest maxDets
MASK_DETECTIONS_PER_IMAGE = 100


def has_segmentations(ground_truth: Mapping[str, Any]) -> bool:
    """Whether a COCO ground truth has instance masks to evaluate against (some object has a ``segmentation``)."""
    return any(ann.get("segmentation") for ann in ground_truth.get("annotations", []))


def new_mask_evaluator(model: Any, ground_truth: Mapping[str, Any],
                       class_names: Sequence[str] | None = None) -> MaskEvaluator | None:
    """A :class:`MaskEvaluator` when ``model`` predicts masks (a segmentation model's config has ``use_mask_head``)
    and ``ground_truth`` has instance masks to score them against; else None."""
    if getattr(getattr(model, "config", None), "use_mask_head", False) and has_segmentations(ground_truth):
        return MaskEvaluator(ground_truth, class_names)
    return None


def _box_polygon(xywh: Sequence[float]) -> list[list[float]]:
    x, y, w, h = (float(v) for v in xywh)
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _mask_area(segmentation: Any, height: int, width: int) -> float:
    from faster_coco_eval.core import mask as coco_mask

    if isinstance(segmentation, list):
        return float(coco_mask.area(coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))))
    if isinstance(segmentation["counts"], list):  # uncompressed RLE
        return float(coco_mask.area(coco_mask.frPyObjects(segmentation, height, width)))
    return float(coco_mask.area(segmentation))


class MaskEvaluator(CocoEvaluator):
    """Accumulate instance masks over a validation pass and compute COCO ``segm`` metrics.

    Used like :class:`~dfine.engine.evaluator.CocoEvaluator`, whose box bookkeeping it shares; :meth:`update` also
    takes each image's ``masks`` (K, H, W) booleans at the image's size.

    Args:
        ground_truth: as for :class:`CocoEvaluator`, plus a ``segmentation`` per annotation (an annotation without
            one, which only a crowd region should be, counts as its box).
        class_names: names indexed by label id.
        verbose: let faster-coco-eval print its usual summary.
    """

    iou_type = "segm"

    def __init__(self, ground_truth: Mapping[str, Any], class_names: Sequence[str] | None = None,
                 verbose: bool = False) -> None:
        super().__init__(ground_truth, class_names, verbose)
        sizes = {img["id"]: (int(img["height"]), int(img["width"])) for img in self._gt["images"]}
        # the normalised annotations keep the given order (ids 1..N), so the i-th is the given i-th
        for ann, given in zip(self._gt["annotations"], ground_truth.get("annotations", []), strict=True):
            segmentation = given.get("segmentation") or _box_polygon(ann["bbox"])
            ann["segmentation"] = segmentation
            ann["area"] = _mask_area(segmentation, *sizes[ann["image_id"]])
        self._segmentations: dict[int, list[dict[str, Any]]] = {}

    def reset(self) -> None:
        super().reset()
        self._segmentations = {}

    def update(self, predictions: Mapping[int, Mapping[str, Any]]) -> None:
        """Add the instances of some images: image id -> ``{"boxes", "scores", "labels", "masks"}`` with masks
        (K, H, W) at the image's size (see :meth:`CocoEvaluator.update` for the rest)."""
        for image_id, det in predictions.items():
            masks = det["masks"]
            if len(masks) != len(det["scores"]):
                raise ValueError(f"image {image_id}: {len(masks)} masks for {len(det['scores'])} scores")
            boxes = _to_numpy(det["boxes"], np.float32).reshape(-1, 4)
            finite = np.isfinite(_to_numpy(det["scores"], np.float32).reshape(-1)) & np.isfinite(boxes).all(axis=1)
            rles = mask_to_rle(masks) if len(masks) else []
            self._segmentations[int(image_id)] = [rle for rle, keep in zip(rles, finite, strict=True) if keep]
        super().update(predictions)

    def synchronize(self) -> None:
        super().synchronize()
        merged: dict[int, list[dict[str, Any]]] = {}
        for part in all_gather_object(self._segmentations):
            merged.update(part)
        self._segmentations = merged

    def segmentations(self) -> dict[int, list[dict[str, Any]]]:
        """Image id -> the COCO RLE of each of :meth:`predictions`' instances, in the same order; not copies."""
        return self._segmentations

    def coco_detections(self) -> list[dict[str, Any]]:
        """The stored instances as a COCO results list, each with its ``segmentation`` (RLE) in place of its box.

        Without a ``bbox`` COCO's ``loadRes`` takes a detection's ``area`` from its mask, which is what places it in
        COCO's small / medium / large ranges beside the ground truth's mask areas (with one it would use the box's).
        """
        records = super().coco_detections()
        segmentations = [rle for image_id in sorted(self._predictions) for rle in self._segmentations[image_id]]
        for record, rle in zip(records, segmentations, strict=True):
            del record["bbox"]
            record["segmentation"] = rle
        return records
