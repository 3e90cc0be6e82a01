"""Does box uncertainty mean something? Its rank correlation with the localisation error on a validation set.

:mod:`dfine.ops.uncertainty` gives each detection one number, the typical spread of its edges relative to its size.
If it is informative, the boxes it calls uncertain are the ones that sit worse on their objects. Measured here:
each detection scoring at least the threshold (those ``dfine predict`` keeps) is matched to a ground-truth box one
to one, greedily by IoU, best pair first, whatever the classes (a dog called a cat still has a box that fits or
not), with a low IoU floor (0.1) so that badly placed boxes, the ones a reviewer needs to find, stay in. The
localisation error is ``1 - IoU`` with the matched box, and the report is Spearman's ρ between uncertainty and
error over the matched detections: 1 when the uncertainty ranks the errors exactly, 0 when it says nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dfine.ops.numpy_boxes import iou_matrix

__all__ = ["UncertaintyReport", "localization_errors", "uncertainty_report"]

MATCH_IOU = 0.1


@dataclass
class UncertaintyReport:
    """Spearman's ρ (and its p-value) between box uncertainty and ``1 - IoU`` over ``detections`` matched ones; ρ
    is NaN when fewer than three were matched or either side is constant."""

    spearman_rho: float
    p_value: float
    detections: int
    score_threshold: float
    match_iou: float
    uncertainty: np.ndarray  # (n,) of the matched detections
    error: np.ndarray  # (n,) their 1 - IoU

    def as_dict(self) -> dict[str, Any]:
        """The numbers, JSON-ready (NaN as None)."""

        def number(value: float) -> float | None:
            return None if not np.isfinite(value) else round(float(value), 5)

        p_value = None if not np.isfinite(self.p_value) else float(f"{self.p_value:.3g}")  # tiny, not 0
        return {"spearman_rho": number(self.spearman_rho), "p_value": p_value,
                "detections": self.detections, "score_threshold": self.score_threshold, "match_iou": self.match_iou,
                "median_uncertainty": number(float(np.median(self.uncertainty))) if self.detections else None,
                "median_error": number(float(np.median(self.error))) if self.detections else None}


def _truth_boxes(ground_truth: Mapping[str, Any]) -> dict[int, np.ndarray]:
    """Image id -> the xyxy boxes of its objects (crowd regions left out: they are not one object's box)."""
    rows: dict[int, list[list[float]]] = {}
    for ann in ground_truth["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        rows.setdefault(int(ann["image_id"]), []).append([x, y, x + w, y + h])
    return {image_id: np.asarray(boxes, dtype=np.float64) for image_id, boxes in rows.items()}


def localization_errors(ground_truth: Mapping[str, Any],
                        predictions: Mapping[int, tuple[np.ndarray, np.ndarray, np.ndarray]],
                        uncertainties: Mapping[int, np.ndarray], score_threshold: float = 0.5,
                        match_iou: float = MATCH_IOU) -> tuple[np.ndarray, np.ndarray]:
    """``(uncertainty, 1 - IoU)`` of every detection scoring at least ``score_threshold`` that matched a
    ground-truth box (one to one, greedily by IoU, at least ``match_iou``), over the images that have
    uncertainties.

    Args:
        ground_truth: COCO-format dict (``CocoEvaluator.ground_truth()``).
        predictions: image id -> (boxes xyxy, scores, labels) (``CocoEvaluator.predictions()``).
        uncertainties: image id -> (N,) box uncertainty of those detections (``CocoEvaluator.uncertainties()``).
    """
    truth = _truth_boxes(ground_truth)
    found_u: list[float] = []
    found_e: list[float] = []
    for image_id in sorted(uncertainties):
        boxes, scores, _ = predictions[image_id]
        keep = np.asarray(scores) >= score_threshold
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[keep]
        spreads = np.asarray(uncertainties[image_id], dtype=np.float64)[keep]
        objects = truth.get(image_id, np.zeros((0, 4)))
        if not len(boxes) or not len(objects):
            continue
        ious = iou_matrix(boxes, objects)
        pairs = np.argwhere(ious >= match_iou)
        taken_d, taken_g = set(), set()
        for d, g in pairs[np.argsort(-ious[pairs[:, 0], pairs[:, 1]], kind="stable")].tolist():
            if d not in taken_d and g not in taken_g:
                taken_d.add(d)
                taken_g.add(g)
                found_u.append(float(spreads[d]))
                found_e.append(1.0 - float(ious[d, g]))
    return np.asarray(found_u, dtype=np.float64), np.asarray(found_e, dtype=np.float64)


def uncertainty_report(ground_truth: Mapping[str, Any],
                       predictions: Mapping[int, tuple[np.ndarray, np.ndarray, np.ndarray]],
                       uncertainties: Mapping[int, np.ndarray], score_threshold: float = 0.5,
                       match_iou: float = MATCH_IOU) -> UncertaintyReport:
    """Spearman's ρ between box uncertainty and localisation error (:func:`localization_errors`)."""
    from scipy.stats import spearmanr

    uncertainty, error = localization_errors(ground_truth, predictions, uncertainties, score_threshold, match_iou)
    rho = p_value = float("nan")
    if len(error) >= 3 and np.ptp(error) > 0 and np.ptp(uncertainty) > 0:
        result = spearmanr(uncertainty, error)
        rho, p_value = float(result.statistic), float(result.pvalue)
    return UncertaintyReport(rho, p_value, len(error), score_threshold, match_iou, uncertainty, error)
