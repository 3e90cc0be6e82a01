"""MaskEvaluator (COCO ``segm``) against a plain COCOeval, with polygon and RLE ground truth and crowd regions.

The reference is pycocotools when it is installed, else faster-coco-eval's COCOeval called directly on the raw
ground truth (what MaskEvaluator adds is checked either way: its copy of the ground truth, mask areas, RLE encoding,
crowd handling, per-class tables).
"""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest
import torch

from dfine.engine.evaluator import STAT_NAMES
from dfine.engine.mask_eval import MaskEvaluator, has_segmentations
from dfine.processing.detections import mask_to_rle

try:
    from pycocotools import mask as coco_mask
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
except ImportError:  # the evaluation's own library, called directly
    from faster_coco_eval import COCO
    from faster_coco_eval import COCOeval_faster as COCOeval
    from faster_coco_eval.core import mask as coco_mask

H, W = 96, 128


def _disc(cx: float, cy: float, r: float) -> np.ndarray:
    ys, xs = np.mgrid[:H, :W]
    return (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r


def _polygon(cx: float, cy: float, r: float, n: int = 12) -> list[float]:
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return [round(float(v), 2) for a in angles for v in (cx + r * np.cos(a), cy + r * np.sin(a))]


def _ground_truth(seed: int) -> dict:
    """Four images of discs as polygons (two classes), one crowd region as uncompressed RLE, one image empty."""
    rng = np.random.default_rng(seed)
    images = [{"id": 10 + i, "width": W, "height": H} for i in range(4)]
    annotations = []
    for image in images[:3]:
        for _ in range(int(rng.integers(1, 4))):
            cx, cy, r = rng.uniform(26, W - 26), rng.uniform(26, H - 26), rng.uniform(5, 25)  # small and medium
            annotations.append({"id": len(annotations) + 1, "image_id": image["id"],
                                "category_id": int(rng.integers(0, 2)), "bbox": [cx - r, cy - r, 2 * r, 2 * r],
                                "area": float(np.pi * r * r), "iscrowd": 0, "segmentation": [_polygon(cx, cy, r)]})
    # one object as a compressed RLE (a string, as in JSON files) instead of its polygon
    first = annotations[0]
    rle = coco_mask.merge(coco_mask.frPyObjects(first["segmentation"], H, W))
    first["segmentation"] = {"size": [H, W], "counts": rle["counts"].decode("ascii") if isinstance(rle["counts"], bytes)
                             else rle["counts"]}
    crowd = np.zeros((H, W), dtype=np.uint8)
    crowd[60:90, 10:50] = 1
    counts = _uncompressed_counts(crowd)
    annotations.append({"id": len(annotations) + 1, "image_id": 10, "category_id": 0, "bbox": [10, 60, 40, 30],
                        "area": 1200.0, "iscrowd": 1, "segmentation": {"size": [H, W], "counts": counts}})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}]}


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE: run lengths of the column-major pixels, starting with a run of zeros."""
    flat = mask.T.reshape(-1)
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return counts


def _predictions(gt: dict, seed: int) -> dict[int, dict[str, torch.Tensor]]:
    """Shifted / shrunk discs for most objects (some with the wrong class), false positives, and a detection on the
    crowd region."""
    rng = np.random.default_rng(seed + 7)
    out = {}
    for image in gt["images"]:
        masks, boxes, scores, labels = [], [], [], []
        for ann in (a for a in gt["annotations"] if a["image_id"] == image["id"] and not a["iscrowd"]):
            x, y, w, _ = ann["bbox"]
            r = w / 2 * rng.uniform(0.7, 1.1)
            cx, cy = x + w / 2 + rng.normal(0, 2), y + w / 2 + rng.normal(0, 2)
            masks.append(_disc(cx, cy, r))
            boxes.append([cx - r, cy - r, cx + r, cy + r])
            scores.append(rng.uniform(0.3, 1.0))
            labels.append(ann["category_id"] if rng.random() > 0.2 else 1 - ann["category_id"])
        for _ in range(2):
            cx, cy, r = rng.uniform(10, W - 10), rng.uniform(10, H - 10), rng.uniform(4, 12)
            masks.append(_disc(cx, cy, r))
            boxes.append([cx - r, cy - r, cx + r, cy + r])
            scores.append(rng.uniform(0.0, 0.6))
            labels.append(int(rng.integers(0, 2)))
        if image["id"] == 10:  # on the crowd region: ignored, not a false positive
            on_crowd = np.zeros((H, W), dtype=bool)
            on_crowd[65:85, 15:35] = True
            masks.append(on_crowd)
            boxes.append([15, 65, 35, 85])
            scores.append(0.95)
            labels.append(0)
        out[image["id"]] = {"masks": torch.from_numpy(np.stack(masks)), "boxes": torch.tensor(boxes),
                            "scores": torch.tensor(scores, dtype=torch.float32), "labels": torch.tensor(labels)}
    return out


def _reference_stats(gt: dict, predictions: dict[int, dict[str, torch.Tensor]]) -> list[float]:
    results = []
    for image_id, det in predictions.items():
        for rle, score, label in zip(mask_to_rle(det["masks"]), det["scores"].tolist(), det["labels"].tolist(),
                                     strict=True):
            results.append({"image_id": image_id, "category_id": label, "segmentation": rle, "score": score})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, "segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(v) for v in evaluator.stats]


def _rle(seg: list | dict) -> dict:
    if isinstance(seg, list):
        return coco_mask.merge(coco_mask.frPyObjects(seg, H, W))
    if isinstance(seg["counts"], list):
        return coco_mask.frPyObjects(seg, H, W)
    return {"size": seg["size"], "counts": seg["counts"].encode("ascii")}


def _as_masks_gt(gt: dict) -> dict:
    """The ground truth with ``area`` as the mask's pixel count, which MaskEvaluator uses for COCO's size ranges."""
    out = copy.deepcopy(gt)
    for ann in out["annotations"]:
        ann["area"] = float(coco_mask.area(_rle(ann["segmentation"])))
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_segm_metrics_match_cocoeval(seed: int) -> None:
    gt = _ground_truth(seed)
    predictions = _predictions(gt, seed)
    evaluator = MaskEvaluator(gt, ["a", "b"])
    evaluator.update(predictions)
    evaluator.synchronize()
    result = evaluator.compute()
    expected = _reference_stats(_as_masks_gt(gt), predictions)
    assert result.iou_type == "segm"
    for name, ours, theirs in zip(STAT_NAMES, result.stats, expected, strict=False):
        assert ours == pytest.approx(theirs, abs=1e-4, nan_ok=True), name
    assert [c.name for c in result.per_class] == ["a", "b"]
    assert "COCO mask metrics" in result.table()


def test_perfect_masks_score_one_and_crowd_detections_are_ignored() -> None:
    gt = _ground_truth(3)
    perfect = {}
    for image in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == image["id"] and not a["iscrowd"]]
        masks = [coco_mask.decode(_rle(a["segmentation"])).astype(bool) for a in anns]
        boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns]
        labels = [a["category_id"] for a in anns]
        if image["id"] == 10:  # a confident detection inside the crowd region
            crowd = np.zeros((H, W), dtype=bool)
            crowd[62:88, 12:48] = True
            masks.append(crowd)
            boxes.append([12, 62, 48, 88])
            labels.append(0)
        perfect[image["id"]] = {"masks": torch.from_numpy(np.stack(masks) if masks else np.zeros((0, H, W), bool)),
                                "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                                "scores": torch.ones(len(masks)), "labels": torch.tensor(labels, dtype=torch.long)}
    evaluator = MaskEvaluator(gt, ["a", "b"])
    evaluator.update(perfect)
    result = evaluator.compute()
    assert result.AP == pytest.approx(1.0) and result.AP50 == pytest.approx(1.0)
    # without the crowd flag, the same detection is a false positive
    no_crowd = copy.deepcopy(gt)
    no_crowd["annotations"] = [a for a in no_crowd["annotations"] if not a["iscrowd"]]
    evaluator = MaskEvaluator(no_crowd, ["a", "b"])
    evaluator.update(perfect)
    assert evaluator.compute().AP < 1.0


def test_masks_must_match_the_detections() -> None:
    gt = _ground_truth(0)
    evaluator = MaskEvaluator(gt)
    with pytest.raises(ValueError, match="2 masks for 1 scores"):
        evaluator.update({10: {"masks": torch.zeros(2, H, W, dtype=torch.bool), "boxes": torch.zeros(1, 4),
                               "scores": torch.ones(1), "labels": torch.zeros(1, dtype=torch.long)}})
    assert has_segmentations(gt)
    assert not has_segmentations({"annotations": [{"bbox": [0, 0, 1, 1]}]})
