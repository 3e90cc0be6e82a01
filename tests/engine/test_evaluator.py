"""CocoEvaluator against pycocotools, the reference implementation of the COCO metrics."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import sys

import numpy as np
import pytest
import torch

from dfine.engine.evaluator import STAT_NAMES, CocoEvaluator, EvalResult, format_ap

pycocotools_coco = pytest.importorskip("pycocotools.coco")
pycocotools_eval = pytest.importorskip("pycocotools.cocoeval")

TOL = 1e-4
NUM_CLASSES = 5


def make_ground_truth(seed: int, num_images: int = 8, empty_images: int = 2) -> dict:
    """Images with small (<32²), medium and large boxes, a few crowd boxes, and some images with no boxes."""
    rng = np.random.default_rng(seed)
    images = [{"id": 100 + i, "width": 640, "height": 480} for i in range(num_images)]
    annotations = []
    for image in images[: num_images - empty_images]:
        for _ in range(int(rng.integers(1, 9))):
            side = float(rng.choice([12.0, 55.0, 180.0]))  # small / medium / large
            w, h = side * rng.uniform(0.7, 1.3, size=2)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image["id"],
                # The last class never gets ground truth: its AP must be undefined, not 0.
                "category_id": int(rng.integers(0, NUM_CLASSES - 1)),
                "bbox": [float(x), float(y), float(w), float(h)],
                "area": float(w * h),
                "iscrowd": int(rng.random() < 0.12),
            })
    categories = [{"id": i, "name": f"class_{i}"} for i in range(NUM_CLASSES)]
    return {"images": images, "annotations": annotations, "categories": categories}


def make_predictions(gt: dict, seed: int, skip_images: int = 1) -> dict[int, dict[str, torch.Tensor]]:
    """Jittered copies of the GT (some with the wrong label, some missed) plus random false positives."""
    rng = np.random.default_rng(seed + 1000)
    predictions = {}
    image_ids = [image["id"] for image in gt["images"]]
    for image_id in image_ids:
        boxes, scores, labels = [], [], []
        if image_id not in image_ids[:skip_images]:  # these images get no detections at all
            for ann in (a for a in gt["annotations"] if a["image_id"] == image_id):
                if rng.random() < 0.1:
                    continue
                x, y, w, h = ann["bbox"]
                noise = rng.normal(0.0, 0.07, size=4) * np.array([w, h, w, h])
                boxes.append([x + noise[0], y + noise[1], x + w + noise[2], y + h + noise[3]])
                scores.append(rng.uniform(0.3, 1.0))
                label = ann["category_id"] if rng.random() < 0.85 else int(rng.integers(0, NUM_CLASSES))
                labels.append(label)
            for _ in range(int(rng.integers(0, 25))):
                x, y = rng.uniform(0, 560), rng.uniform(0, 400)
                w, h = rng.uniform(4, 160, size=2)
                boxes.append([x, y, x + w, y + h])
                scores.append(rng.uniform(0.0, 0.7))
                labels.append(int(rng.integers(0, NUM_CLASSES)))
        predictions[image_id] = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32),
            "labels": torch.tensor(labels, dtype=torch.int64),
        }
    return predictions


def reference_coco_eval(gt: dict, predictions: dict, image_ids: list[int] | None = None):
    """pycocotools' numbers for the same inputs: (12 stats, {category id: AP@[.5:.95] or NaN})."""
    detections = []
    for image_id, det in predictions.items():
        boxes = det["boxes"].double().numpy()
        for box, score, label in zip(boxes, det["scores"].tolist(), det["labels"].tolist()):
            x1, y1, x2, y2 = box.tolist()
            detections.append({"image_id": image_id, "category_id": label, "bbox": [x1, y1, x2 - x1, y2 - y1],
                               "score": score})  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = pycocotools_coco.COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(detections)
        evaluator = pycocotools_eval.COCOeval(coco_gt, coco_dt, "bbox")
        if image_ids is not None:
            evaluator.params.imgIds = image_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"]
    per_class = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        p = precision[:, :, k, 0, -1]
        per_class[cat_id] = float(p[p > -1].mean()) if (p > -1).any() else math.nan
    return np.asarray(evaluator.stats), per_class


def one_detection(box_xyxy: list[float], score: float, label: int) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor([box_xyxy]), "scores": torch.tensor([score]), "labels": torch.tensor([label])}


def assert_matches_reference(result: EvalResult, stats: np.ndarray, per_class: dict) -> None:
    ours = np.asarray(result.stats[:12])
    assert np.abs(ours - stats).max() < TOL, f"\nours {ours}\nref  {stats}"
    for row in result.per_class:
        expected = per_class[row.label]
        if math.isnan(expected):
            assert math.isnan(row.ap), row
        else:
            assert abs(row.ap - expected) < TOL, (row, expected)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_pycocotools_on_noisy_predictions(seed: int) -> None:
    gt = make_ground_truth(seed)
    predictions = make_predictions(gt, seed)
    evaluator = CocoEvaluator(gt)
    evaluator.update(predictions)
    result = evaluator.compute()

    stats, per_class = reference_coco_eval(gt, predictions)
    assert_matches_reference(result, stats, per_class)
    # The fixture really exercises the interesting buckets.
    assert {a["iscrowd"] for a in gt["annotations"]} == {0, 1}
    assert all(not math.isnan(getattr(result, name)) for name in ("APs", "APm", "APl"))
    assert 0.05 < result.AP < 0.95
    assert result.num_images == len(gt["images"])


def test_matches_pycocotools_when_predictions_arrive_in_batches() -> None:
    gt = make_ground_truth(5)
    predictions = make_predictions(gt, 5)
    evaluator = CocoEvaluator(gt)
    items = list(predictions.items())
    for start in range(0, len(items), 3):
        evaluator.update(dict(items[start : start + 3]))
    stats, per_class = reference_coco_eval(gt, predictions)
    assert_matches_reference(evaluator.compute(), stats, per_class)


def test_matches_pycocotools_beyond_100_detections_per_image() -> None:
    # maxDets=100 applies per image *and category*: 300 detections of one class must be cut to the best 100.
    gt = make_ground_truth(7, num_images=3, empty_images=0)
    predictions = make_predictions(gt, 7, skip_images=0)
    rng = np.random.default_rng(7)
    image_id = gt["images"][0]["id"]
    extra_xy = torch.tensor(rng.uniform(0, 500, size=(300, 2)), dtype=torch.float32)
    extra = torch.cat([extra_xy, extra_xy + 40.0], dim=1)
    extra_scores = torch.rand(300, generator=torch.Generator().manual_seed(0))
    predictions[image_id] = {
        "boxes": torch.cat([predictions[image_id]["boxes"], extra]),
        "scores": torch.cat([predictions[image_id]["scores"], extra_scores]),
        "labels": torch.cat([predictions[image_id]["labels"], torch.zeros(300, dtype=torch.int64)]),
    }
    evaluator = CocoEvaluator(gt)
    evaluator.update(predictions)
    stats, per_class = reference_coco_eval(gt, predictions)
    assert_matches_reference(evaluator.compute(), stats, per_class)


def test_only_images_received_are_evaluated() -> None:
    gt = make_ground_truth(3)
    predictions = make_predictions(gt, 3)
    subset = dict(list(predictions.items())[:4])
    evaluator = CocoEvaluator(gt)
    evaluator.update(subset)
    result = evaluator.compute()
    stats, per_class = reference_coco_eval(gt, subset, image_ids=sorted(subset))
    assert_matches_reference(result, stats, per_class)
    assert result.num_images == 4


def test_zero_based_annotation_ids_are_renumbered() -> None:
    # pycocotools and faster-coco-eval store "matched GT id" with 0 meaning "unmatched": a GT with id 0 that is
    # found would count as a false positive. The evaluator renumbers, so it matches the 1-based reference.
    gt = make_ground_truth(4)
    zero_based = copy.deepcopy(gt)
    for ann in zero_based["annotations"]:
        ann["id"] -= 1
        del ann["area"]  # box-only data sets may omit area; the box area is used
    for ann in gt["annotations"]:
        ann["area"] = ann["bbox"][2] * ann["bbox"][3]
    predictions = make_predictions(gt, 4)
    evaluator = CocoEvaluator(zero_based)
    evaluator.update(predictions)
    stats, per_class = reference_coco_eval(gt, predictions)
    assert_matches_reference(evaluator.compute(), stats, per_class)

    # The failure being avoided: one GT with id 0, found exactly, scores 0 in pycocotools.
    single = {
        "images": [{"id": 1, "width": 100, "height": 100}],
        "annotations": [
            {"id": 0, "image_id": 1, "category_id": 0, "bbox": [10, 10, 50, 50], "area": 2500, "iscrowd": 0}
        ],
        "categories": [{"id": 0, "name": "a"}],
    }
    found = {1: one_detection([10.0, 10, 60, 60], 0.9, 0)}
    assert reference_coco_eval(single, found)[0][0] == 0.0
    evaluator = CocoEvaluator(single)
    evaluator.update(found)
    assert evaluator.compute().AP == pytest.approx(1.0)


def test_perfect_predictions_give_ap_one() -> None:
    gt = make_ground_truth(2, empty_images=0)
    predictions = {}
    for image in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == image["id"] and not a["iscrowd"]]
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float64).reshape(-1, 4)
        predictions[image["id"]] = {
            "boxes": torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1).numpy(),  # arrays work too
            "scores": np.linspace(0.9, 0.5, len(anns)),
            "labels": np.array([a["category_id"] for a in anns]),
        }
    evaluator = CocoEvaluator(gt)
    evaluator.update(predictions)
    result = evaluator.compute()
    for name in STAT_NAMES:
        value = getattr(result, name)
        if name in ("AR1", "AR10"):  # capped by the number of detections allowed, not by quality
            assert value <= 1.0
        else:
            assert value == pytest.approx(1.0, abs=1e-9), name


def test_per_class_ap() -> None:
    gt = {
        "images": [{"id": 1, "width": 200, "height": 200}, {"id": 2, "width": 200, "height": 200}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 0, "bbox": [10, 10, 50, 50], "area": 2500, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [100, 100, 40, 40], "area": 1600, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 0, "bbox": [20, 30, 60, 40], "area": 2400, "iscrowd": 0},
        ],
        "categories": [{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}, {"id": 2, "name": "bird"}],
    }
    predictions = {1: one_detection([10.0, 10, 60, 60], 0.9, 0), 2: one_detection([20.0, 30, 80, 70], 0.8, 0)}
    evaluator = CocoEvaluator(gt, class_names=["Cat", "Dog", "Bird"])
    evaluator.update(predictions)
    result = evaluator.compute()
    by_label = {row.label: row for row in result.per_class}
    assert by_label[0].ap == pytest.approx(1.0) and by_label[0].name == "Cat" and by_label[0].num_gt == 2
    assert by_label[1].ap == 0.0 and by_label[1].num_gt == 1  # never predicted
    assert math.isnan(by_label[2].ap) and by_label[2].num_gt == 0  # no ground truth
    assert result.AP == pytest.approx(0.5)  # the mean over the two classes with ground truth
    assert result.as_dict()["per_class_AP"] == {"Cat": 1.0, "Dog": 0.0, "Bird": None}
    # the table's rows, for `dfine val --json` readers
    assert result.as_dict()["per_class"] == [
        {"label": 0, "class": "Cat", "AP": pytest.approx(1.0), "AP50": pytest.approx(1.0), "num_gt": 2},
        {"label": 1, "class": "Dog", "AP": 0.0, "AP50": 0.0, "num_gt": 1},
        {"label": 2, "class": "Bird", "AP": None, "AP50": None, "num_gt": 0}]
    table = result.table()
    assert "Cat" in table and "Bird" in table and "AP50" in table
    # the first column is the model's label index, which is not a COCO category id: it must not be called "id"
    header = next(line for line in table.splitlines() if "class" in line and "#gt" in line)
    assert header.split()[:2] == ["label", "class"]


def empty_detection() -> dict[str, torch.Tensor]:
    return {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}


def test_no_predictions_give_zeros() -> None:
    gt = make_ground_truth(0)
    never_updated = CocoEvaluator(gt).compute()
    evaluator = CocoEvaluator(gt)
    evaluator.update({image["id"]: empty_detection() for image in gt["images"]})
    all_empty = evaluator.compute()
    for result in (never_updated, all_empty):
        assert result.num_detections == 0
        assert result.num_images == len(gt["images"])
        for name in STAT_NAMES:
            assert getattr(result, name) == 0.0, name
        assert all(row.ap == 0.0 for row in result.per_class if row.num_gt)


def test_no_ground_truth_at_all_is_undefined_not_a_crash() -> None:
    gt = {"images": [{"id": 1, "width": 50, "height": 50}], "annotations": [], "categories": [{"id": 0, "name": "a"}]}
    evaluator = CocoEvaluator(gt)
    evaluator.update({1: one_detection([1.0, 1, 9, 9], 0.5, 0)})
    result = evaluator.compute()
    assert math.isnan(result.AP) and result.stats[0] == -1.0
    json.dumps(result.as_dict(), allow_nan=False)  # NaN becomes null
    assert "-" in result.table()


def test_images_without_gt_or_predictions() -> None:
    gt = make_ground_truth(6, num_images=4, empty_images=2)
    predictions = make_predictions(gt, 6, skip_images=1)
    background_only = gt["images"][-1]["id"]
    assert not any(a["image_id"] == background_only for a in gt["annotations"])
    assert len(predictions[gt["images"][0]["id"]]["scores"]) == 0
    evaluator = CocoEvaluator(gt)
    evaluator.update(predictions)
    stats, per_class = reference_coco_eval(gt, predictions)
    assert_matches_reference(evaluator.compute(), stats, per_class)


def test_inputs_are_validated_and_not_modified() -> None:
    gt = make_ground_truth(1)
    before = copy.deepcopy(gt)
    evaluator = CocoEvaluator(gt)
    evaluator.update(make_predictions(gt, 1))
    evaluator.compute()
    assert gt == before
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluator.update({999_999: empty_detection()})
    with pytest.raises(ValueError, match="boxes"):
        evaluator.update({100: {"boxes": torch.zeros(2, 4), "scores": torch.zeros(3), "labels": torch.zeros(2)}})


def test_quiet_unless_verbose_and_pycocotools_untouched(capsys: pytest.CaptureFixture[str]) -> None:
    gt = make_ground_truth(0)
    evaluator = CocoEvaluator(gt)
    evaluator.update(make_predictions(gt, 0))
    evaluator.compute()
    assert capsys.readouterr().out == ""
    # faster_coco_eval.init_as_pycocotools() would replace the real package for the whole process.
    assert "faster_coco_eval" not in sys.modules["pycocotools.cocoeval"].__name__


def test_reset_and_repeated_images() -> None:
    gt = make_ground_truth(0)
    predictions = make_predictions(gt, 0)
    evaluator = CocoEvaluator(gt)
    evaluator.update(predictions)
    evaluator.update(predictions)  # sending an image again replaces, it does not double-count
    first = evaluator.compute()
    evaluator.reset()
    assert evaluator.image_ids == []
    evaluator.update(predictions)
    assert evaluator.compute().stats == first.stats
    assert first.num_detections == sum(len(p["scores"]) for p in predictions.values())


def test_non_finite_detections_are_dropped_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    # faster-coco-eval refuses NaN scores; a diverging model must still get a (bad) evaluation, not a crash.
    gt = make_ground_truth(0)
    predictions = make_predictions(gt, 0)
    finite_only = {}
    dropped = 0
    for image_id, det in predictions.items():
        boxes, scores = det["boxes"].clone(), det["scores"].clone()
        bad = torch.zeros(len(scores), dtype=torch.bool)
        bad[::4] = True
        boxes[0::8, 2] = float("nan")
        scores[4::8] = float("inf")
        dropped += int(bad.sum())
        finite_only[image_id] = {key: value[~bad] for key, value in det.items()}
        predictions[image_id] = {"boxes": boxes, "scores": scores, "labels": det["labels"]}
    evaluator = CocoEvaluator(gt)
    evaluator.update(predictions)
    result = evaluator.compute()
    assert result.num_non_finite == dropped > 0
    assert f"dropped {dropped} detections" in caplog.text
    stats, per_class = reference_coco_eval(gt, finite_only)
    assert_matches_reference(result, stats, per_class)


def test_console_ap_is_a_percentage_as_in_the_table() -> None:
    assert format_ap(0.41234) == "41.2%" and format_ap(1.0) == "100.0%" and format_ap(0.0) == "0.0%"
    assert format_ap(math.nan) == "-" and format_ap(None) == "-"
