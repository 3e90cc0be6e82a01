"""One picture's detections as arrays, and as the records of ``predictions.json``.

``dfine predict`` and ``dfine track`` write the same records (the latter adds ``track_id``), so both build them
here: a detector's result (:meth:`dfine.predict.predictor.Predictor.predict`) becomes a :class:`FrameDetections`
(boxes clipped to the picture, the classes asked for kept), and :func:`detection_records` turns that into records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FrameDetections", "detection_records"]


def _clip_boxes(boxes: Any, width: int, height: int) -> np.ndarray:
    """(K, 4) xyxy boxes clipped to the image, as float64 (the model's boxes can run past the borders)."""
    array = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    array[:, 0::2] = array[:, 0::2].clip(0, width)
    array[:, 1::2] = array[:, 1::2].clip(0, height)
    return array


@dataclass
class FrameDetections:
    """The detections of one picture, as NumPy arrays: ``boxes`` (K, 4) xyxy pixels clipped to the picture,
    ``labels`` (K,), ``scores`` (K,), and, from a detector that gives them, ``edges`` (K, 4) the σ of each edge in
    pixels and ``uncertainty`` (K,) one number per box (:mod:`dfine.ops.uncertainty`; None otherwise)."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    edges: np.ndarray | None = None
    uncertainty: np.ndarray | None = None
    masks: np.ndarray | None = None  #: (K, H, W) bool instance masks, from a segmentation model

    @classmethod
    def from_result(cls, result: Mapping[str, Any], width: int, height: int,
                    classes: np.ndarray | None = None) -> FrameDetections:
        """A detector's result for a ``width`` × ``height`` picture, keeping only ``classes`` (label indices) when
        given."""
        edges, uncertainty, masks = result.get("edge_uncertainty"), result.get("uncertainty"), result.get("masks")
        detections = cls(
            _clip_boxes(result["boxes"], width, height),
            np.asarray(result["labels"]).reshape(-1).astype(np.int64),
            np.asarray(result["scores"], dtype=np.float64).reshape(-1),
            None if edges is None else np.asarray(edges, dtype=np.float64).reshape(-1, 4),
            None if uncertainty is None else np.asarray(uncertainty, dtype=np.float64).reshape(-1),
            None if masks is None else np.asarray(masks, dtype=bool).reshape(-1, height, width))
        return detections if classes is None else detections.select(np.isin(detections.labels, classes))

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, index: np.ndarray) -> FrameDetections:
        """The detections at ``index`` (a boolean mask or positions)."""
        return FrameDetections(self.boxes[index], self.labels[index], self.scores[index],
                               None if self.edges is None else self.edges[index],
                               None if self.uncertainty is None else self.uncertainty[index],
                               None if self.masks is None else self.masks[index])


def detection_records(where: Mapping[str, Any], detections: FrameDetections, class_names: Sequence[str],
                      dataset_ids: Sequence[int] | None = None,
                      track_ids: Sequence[int | None] | None = None) -> list[dict[str, Any]]:
    """One ``predictions.json`` record per detection: ``where`` (``image_id``, ``file_name``, a frame's ``frame``
    and ``time``), then ``category_id``, ``dataset_category_id`` (when the model has them), ``category_name``,
    ``bbox`` (x, y, width, height), ``score``, ``uncertainty`` and ``edge_uncertainty`` (left, top, right, bottom
    σ in pixels; when the detector gives them), ``segmentation`` (a segmentation model's instance mask as COCO
    run-length encoding, ``{"size": [H, W], "counts": str}``, which ``pycocotools.mask.decode`` reads) and
    ``track_id`` (when ``track_ids`` is given; None for a detection no track has taken yet)."""
    segmentations = [None] * len(detections.labels)
    if detections.masks is not None:
        from dfine.processing.detections import mask_to_rle

        segmentations = mask_to_rle(detections.masks)
    records = []
    for i, label in enumerate(detections.labels.tolist()):
        x1, y1, x2, y2 = detections.boxes[i].tolist()
        record = {**where, "category_id": label}
        if dataset_ids is not None and 0 <= label < len(dataset_ids):
            record["dataset_category_id"] = dataset_ids[label]
        record["category_name"] = class_names[label] if 0 <= label < len(class_names) else str(label)
        record["bbox"] = [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]
        record["score"] = round(float(detections.scores[i]), 5)
        if detections.uncertainty is not None and detections.edges is not None:
            record["uncertainty"] = round(float(detections.uncertainty[i]), 5)
            record["edge_uncertainty"] = [round(v, 2) for v in detections.edges[i].tolist()]
        if segmentations[i] is not None:
            record["segmentation"] = segmentations[i]
        if track_ids is not None:
            record["track_id"] = track_ids[i]
        records.append(record)
    return records
