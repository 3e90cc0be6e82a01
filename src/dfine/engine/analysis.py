"""What a validation pass shows beyond AP: which classes are confused, missed or hallucinated.

The **confusion matrix** counts, at one score threshold, how each ground-truth box was detected. Detections and
boxes are matched one to one, class-agnostically (so a dog detected as a cat is a confusion, not a miss plus a false
positive), greedily by IoU, best pair first, above ``iou``. Rows are the true classes plus a last *background* row
(detections that match no box: false positives); columns are the predicted classes plus a last *missed* column
(boxes no detection matched). A detection lying in a crowd region (its intersection with the region over its own
area at least ``iou``, as COCO measures it) is neither.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dfine.ops.numpy_boxes import iou_matrix

__all__ = ["confusion_matrix", "prediction_records", "write_report"]


def _ground_truth_by_image(ground_truth: Mapping[str, Any]) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Image id -> (boxes xyxy, labels, iscrowd) from a COCO-format dict whose category ids are labels."""
    rows: dict[int, list[tuple[float, float, float, float, int, bool]]] = {}
    for ann in ground_truth["annotations"]:
        x, y, w, h = (float(v) for v in ann["bbox"])
        rows.setdefault(int(ann["image_id"]), []).append((x, y, x + w, y + h, int(ann["category_id"]),
                                                          bool(ann.get("iscrowd", 0))))
    out = {}
    for image_id, items in rows.items():
        array = np.asarray([r[:4] for r in items], dtype=np.float64).reshape(-1, 4)
        out[image_id] = (array, np.asarray([r[4] for r in items], dtype=np.int64),
                         np.asarray([r[5] for r in items], dtype=bool))
    return out


def confusion_matrix(ground_truth: Mapping[str, Any],
                     predictions: Mapping[int, tuple[np.ndarray, np.ndarray, np.ndarray]], num_classes: int,
                     score_threshold: float = 0.5, iou: float = 0.5) -> np.ndarray:
    """The (C + 1, C + 1) count matrix described in the module docstring.

    Args:
        ground_truth: COCO-format dict (category ids are the labels ``0..C-1``), e.g.
            ``CocoEvaluator.ground_truth()``.
        predictions: image id -> (boxes xyxy, scores, labels), e.g. ``CocoEvaluator.predictions()``; images
            without an entry count their boxes as missed.
        num_classes: C.
        score_threshold: detections scoring below this are ignored (what ``dfine predict --threshold`` keeps).
        iou: minimum IoU of a match.
    """
    background = num_classes
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    truth = _ground_truth_by_image(ground_truth)
    empty = (np.zeros((0, 4)), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool))
    image_ids = {int(img["id"]) for img in ground_truth["images"]}
    for image_id in sorted(image_ids):
        gt_boxes, gt_labels, crowd = truth.get(image_id, empty)
        boxes, scores, labels = predictions.get(image_id, (np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)))
        keep = np.asarray(scores) >= score_threshold
        boxes, labels = np.asarray(boxes, dtype=np.float64)[keep].reshape(-1, 4), np.asarray(labels)[keep]
        real_boxes, real_labels = gt_boxes[~crowd], gt_labels[~crowd]
        ious = (iou_matrix(real_boxes, boxes) if len(real_boxes) and len(boxes)
                else np.zeros((len(real_boxes), len(boxes))))
        matched_gt = np.zeros(len(real_boxes), dtype=bool)
        matched_det = np.zeros(len(boxes), dtype=bool)
        if ious.size:
            pairs = np.argwhere(ious >= iou)
            for g, d in pairs[np.argsort(-ious[pairs[:, 0], pairs[:, 1]], kind="stable")]:
                if not matched_gt[g] and not matched_det[d]:
                    matched_gt[g] = matched_det[d] = True
                    matrix[real_labels[g], labels[d]] += 1
        for g in np.flatnonzero(~matched_gt):
            matrix[real_labels[g], background] += 1
        spare = np.flatnonzero(~matched_det)
        if crowd.any() and len(spare):  # a detection inside a crowd region is not a false positive
            inside = iou_matrix(boxes[spare], gt_boxes[crowd], crowd=True).max(axis=1) >= iou
            spare = spare[~inside]
        for d in spare:
            matrix[background, labels[d]] += 1
    return matrix


def prediction_records(ground_truth: Mapping[str, Any],
                       predictions: Mapping[int, tuple[np.ndarray, np.ndarray, np.ndarray]],
                       category_ids: Sequence[int], class_names: Sequence[str], top: int = 100,
                       segmentations: Mapping[int, Sequence[dict[str, Any]]] | None = None) -> list[dict[str, Any]]:
    """COCO results records (``image_id``, ``category_id``, ``bbox`` as xywh, ``score``) in the data set's own ids,
    with ``file_name`` and ``category_name`` added: the best ``top`` detections of each image (all COCO AP looks at),
    best first. Loadable by pycocotools' ``loadRes`` against the data set's annotation file. With
    ``segmentations`` (image id -> each prediction's COCO RLE, in the predictions' order), every record also has its
    instance mask as ``segmentation``, so the same file loads for ``segm`` scoring too."""
    names = {int(img["id"]): img.get("file_name") for img in ground_truth["images"]}
    records = []
    for image_id in sorted(predictions):
        boxes, scores, labels = predictions[image_id]
        order = np.argsort(-np.asarray(scores), kind="stable")[:top]
        for i in order:
            x1, y1, x2, y2 = (float(v) for v in boxes[i])
            label = int(labels[i])
            record = {"image_id": image_id, "file_name": names.get(image_id),
                      "category_id": int(category_ids[label]), "category_name": class_names[label],
                      "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                      "score": round(float(scores[i]), 5)}
            if segmentations is not None:
                record["segmentation"] = segmentations[image_id][i]
            records.append(record)
    return records


def write_report(output: str | Path, result: Any, evaluator: Any, category_ids: Sequence[int],
                 class_names: Sequence[str], score_threshold: float = 0.5, mask_evaluator: Any = None) -> list[Path]:
    """Write what ``dfine val --output`` leaves in ``output``; returns the paths written.

    * ``metrics.json``: ``result.as_dict()``;
    * ``predictions.json``: :func:`prediction_records` (the data set's own category ids); with ``mask_evaluator``
      (a segmentation model's :class:`~dfine.engine.mask_eval.MaskEvaluator`), its instances, each with its box and
      its mask (COCO RLE, ``segmentation``), as the mask AP scored them;
    * ``per_class_ap.png``, ``pr_curve.png``, ``confusion_matrix.png`` (at ``score_threshold``);
    * when the evaluator holds box uncertainties: ``uncertainty.json`` (Spearman's ρ between uncertainty and
      localisation error, :func:`dfine.engine.localization.uncertainty_report`) and ``uncertainty.png``.

    Files are written whole or not at all (atomically).
    """
    import json

    from dfine.engine.localization import uncertainty_report
    from dfine.engine.plots import plot_confusion_matrix, plot_per_class_ap, plot_pr_curves, plot_uncertainty_error
    from dfine.utils.files import atomic_write, atomic_write_text, prepare_output_dir

    # expanduser: as val() checks it, and train's output is taken. A parent that is a file is a one-line error.
    folder = prepare_output_dir(Path(output).expanduser())
    ground_truth = evaluator.ground_truth()
    predictions = evaluator.predictions()
    if mask_evaluator is not None:
        records = prediction_records(ground_truth, mask_evaluator.predictions(), category_ids, class_names,
                                     segmentations=mask_evaluator.segmentations())
    else:
        records = prediction_records(ground_truth, predictions, category_ids, class_names)
    matrix = confusion_matrix(ground_truth, predictions, len(class_names), score_threshold)
    written = [atomic_write_text(folder / "metrics.json", json.dumps(result.as_dict(), indent=2, allow_nan=False)),
               atomic_write_text(folder / "predictions.json", json.dumps(records))]
    for name, draw in (("per_class_ap.png", lambda p: plot_per_class_ap(result, p, max_classes=60)),
                       ("pr_curve.png", lambda p: plot_pr_curves(result, p)),
                       ("confusion_matrix.png", lambda p: plot_confusion_matrix(
                           matrix, list(class_names), p, score_threshold=score_threshold))):
        written.append(atomic_write(folder / name, draw))
    uncertainties = evaluator.uncertainties() if hasattr(evaluator, "uncertainties") else {}
    if uncertainties:
        report = uncertainty_report(ground_truth, predictions, uncertainties, score_threshold)
        written.append(atomic_write_text(folder / "uncertainty.json", json.dumps(report.as_dict(), indent=2)))
        written.append(atomic_write(folder / "uncertainty.png", lambda p: plot_uncertainty_error(
            report.uncertainty, report.error, report.spearman_rho, p)))
    return written
