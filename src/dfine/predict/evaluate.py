"""COCO AP of an exported model (ONNX Runtime, OpenVINO) on a data set split: what ``dfine val --model x.onnx`` /
``x.xml`` prints, and what decides whether an INT8 export is kept (:mod:`dfine.export.int8`).

The pictures are read and resized exactly as ``dfine val`` reads them for a PyTorch model
(:class:`dfine.data.EvalTransforms`: a stretch resize to the graph's input size, values / 255), the graph's own
post-processing gives the top detections in pixels of each image (``orig_target_sizes`` as (width, height)), and
the same :class:`~dfine.engine.evaluator.CocoEvaluator` scores them, so the numbers compare with ``dfine val`` of the
model the file was exported from. This lives above both the exporters and the evaluator (layer ``predict``), which
sit side by side in the layer below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dfine.errors import DFineError

__all__ = ["evaluate_exported", "exported_ap"]


def _split_dataset(data: str | Path, split: str, val_split: float, progress: bool) -> Any:
    """The checked data set spec with ``split`` (a one-line error naming the data set when it has no such split)."""
    from dfine.data import check_dataset, resolve_dataset
    from dfine.data.holdout import hold_out_validation

    spec = resolve_dataset(data)
    if val_split:
        spec = hold_out_validation(spec, val_split)
    if split not in spec.splits:
        hint = " (a data set without one: --val-split 0.1 as in training)" if split == "val" else ""
        raise DFineError(f"{spec.source}: no '{split}' split (found: {', '.join(spec.splits)}){hint}")
    check_dataset(spec, [split], progress=progress)
    return spec


def evaluate_exported(detector: Any, data: str | Path, split: str = "val", *, batch_size: int | None = None,
                      workers: int | None = 0, progress: bool = False, val_split: float = 0.0,
                      output: str | Path | None = None, score_threshold: float = 0.5) -> Any:
    """COCO box metrics (:class:`~dfine.engine.evaluator.EvalResult`) of an exported model on one split.

    Args:
        detector: an :class:`~dfine.runtime.detector.ExportedDetector` (``run``, ``image_size``, ``batch``,
            ``class_names``).
        data: the data set (YAML or folder, as for ``dfine val``).
        split: ``val``, ``train`` or ``test``.
        batch_size: images per call (default: the graph's fixed batch, else 8).
        workers: data-loading processes (0: in this process).
        progress: show a progress bar.
        val_split: for a data set without a validation split, the fraction ``train --val-split`` held out.
        output: also write ``dfine val --output``'s report (metrics.json, predictions.json, plots) there.
        score_threshold: with ``output``, the score from which a detection counts in the confusion matrix.
    """
    from tqdm import tqdm

    from dfine.data import BatchCollator, EvalTransforms, build_dataloader
    from dfine.engine.evaluator import CocoEvaluator

    spec = _split_dataset(data, split, val_split, progress)
    names = list(spec.names)
    if detector.class_names and len(detector.class_names) != len(names):
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise DFineError(f"{detector.path} has {len(detector.class_names)} classes but the data set {spec.source} "
                         f"has {len(names)} ({shown}): evaluate a model trained on these classes")
    size = detector.image_size
    dataset = spec.build(split, EvalTransforms(size))
    loader = build_dataloader(dataset, batch_size or detector.batch or 8, shuffle=False, workers=workers,
                              collate_fn=BatchCollator(size))
    ground_truth = dataset.coco_ground_truth()
    evaluator = CocoEvaluator(ground_truth, names)
    for batch in tqdm(loader, desc="val", disable=not progress, leave=False, dynamic_ncols=True):
        targets = batch["labels"]
        # orig_size is (height, width); the graph takes (width, height), as the original D-FINE tools
        sizes_wh = np.array([[int(t["orig_size"][1]), int(t["orig_size"][0])] for t in targets], dtype=np.int64)
        labels, boxes, scores = detector.run(batch["pixel_values"].numpy(), sizes_wh)[:3]
        evaluator.update({int(t["image_id"]): {"boxes": boxes[i], "scores": scores[i], "labels": labels[i]}
                          for i, t in enumerate(targets)})
    result = evaluator.compute()
    if output is not None:
        from dfine.engine.analysis import write_report

        write_report(output, result, evaluator, dataset.index.categories.ids, names, score_threshold)
    return result


def exported_ap(detector: Any, data: str | Path, val_split: float = 0.0) -> float:
    """COCO AP (0 to 1) of an exported model on the data set's validation split: the measure that
    :mod:`dfine.export.int8` compares between the float and the INT8 model."""
    return float(evaluate_exported(detector, data, "val", val_split=val_split).AP)
