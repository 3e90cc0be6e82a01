"""The evaluation's extras: confusion matrix, COCO result records and the pictures of dfine val --output."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from test_logger import assert_png

from dfine.engine.analysis import confusion_matrix, prediction_records
from dfine.engine.evaluator import CocoEvaluator, EvalResult
from dfine.engine.plots import plot_confusion_matrix, plot_pr_curves

CAT, DOG = 0, 1


def _truth() -> dict:
    def box(ann_id, image_id, xywh, label, crowd=0):
        return {"id": ann_id, "image_id": image_id, "bbox": xywh, "category_id": label, "iscrowd": crowd,
                "area": xywh[2] * xywh[3]}

    return {"images": [{"id": i, "width": 100, "height": 100, "file_name": f"{i}.jpg"} for i in (1, 2, 3)],
            "annotations": [box(1, 1, [0, 0, 20, 20], CAT), box(2, 1, [50, 50, 20, 20], DOG),
                            box(3, 2, [10, 10, 30, 30], CAT), box(4, 3, [0, 0, 60, 60], DOG, crowd=1)],
            "categories": [{"id": CAT, "name": "cat"}, {"id": DOG, "name": "dog"}]}


def _detections(*rows: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.array([r[0] for r in rows], dtype=np.float32).reshape(-1, 4),
            np.array([r[1] for r in rows], dtype=np.float32), np.array([r[2] for r in rows], dtype=np.int64))


def test_matches_confusions_misses_and_false_positives() -> None:
    predictions = {
        1: _detections(([0, 0, 20, 20], 0.9, CAT),     # the cat, found
                       ([1, 1, 21, 21], 0.8, CAT),     # a duplicate of it: the box is taken, so a false positive
                       ([50, 50, 70, 70], 0.7, CAT),   # the dog, called a cat: a confusion
                       ([80, 0, 99, 20], 0.6, DOG),    # nothing there: a false positive
                       ([50, 50, 70, 70], 0.2, DOG)),  # right, but below the score threshold: ignored
        # image 2: no detection, its cat is missed
        3: _detections(([5, 5, 40, 40], 0.9, DOG)),    # inside a crowd region: neither a match nor a false positive
    }
    matrix = confusion_matrix(_truth(), predictions, num_classes=2, score_threshold=0.5)
    expected = np.array([[1, 0, 1],   # cat boxes: 1 found as cat, 1 missed
                         [1, 0, 0],   # dog boxes: 1 found as cat
                         [1, 1, 0]])  # false positives: 1 predicted cat, 1 predicted dog
    assert np.array_equal(matrix, expected), matrix
    # a lower threshold lets the low-scoring dog in: it finds no free box (the cat took it), so it is a false positive
    low = confusion_matrix(_truth(), predictions, num_classes=2, score_threshold=0.1)
    assert low[2, DOG] == 2 and low[DOG, CAT] == 1


def test_a_better_overlap_wins_the_box() -> None:
    predictions = {1: _detections(([4, 4, 24, 24], 0.9, DOG), ([0, 0, 20, 20], 0.6, CAT))}
    matrix = confusion_matrix(_truth(), predictions, num_classes=2, score_threshold=0.5)
    assert matrix[CAT, CAT] == 1 and matrix[2, DOG] == 1 and matrix[CAT, DOG] == 0


def test_records_use_the_data_sets_ids_and_keep_the_best_detections() -> None:
    predictions = {1: _detections(([0, 0, 20, 10], 0.3, CAT), ([10, 20, 40, 60], 0.9, DOG), ([0, 0, 5, 5], 0.1, CAT))}
    records = prediction_records(_truth(), predictions, category_ids=[17, 42], class_names=["cat", "dog"], top=2)
    assert records == [
        {"image_id": 1, "file_name": "1.jpg", "category_id": 42, "category_name": "dog", "bbox": [10.0, 20.0, 30.0,
                                                                                               40.0], "score": 0.9},
        {"image_id": 1, "file_name": "1.jpg", "category_id": 17, "category_name": "cat", "bbox": [0.0, 0.0, 20.0,
                                                                                               10.0], "score": 0.3},
    ]


def test_precision_at_iou_half_is_kept_per_class() -> None:
    evaluator = CocoEvaluator(_truth(), ["cat", "dog"])
    evaluator.update({1: {"boxes": np.array([[0, 0, 20, 20]]), "scores": np.array([0.9]), "labels": np.array([0])},
                      2: {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0)},
                      3: {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0)}})
    result = evaluator.compute()
    assert result.precision50 is not None and result.precision50.shape == (2, 101)
    cat, dog = result.precision50
    # one of the two cats found with precision 1: precision 1 up to recall 0.5, nothing beyond
    assert np.all(cat[:51] == 1.0) and np.all(cat[51:] == 0.0)
    assert math.isclose(np.mean(cat), result.per_class[0].ap50)
    assert np.all(dog == 0.0)  # the dog has ground truth (not NaN) and was never found


def test_the_pictures(tmp_path: Path) -> None:
    evaluator = CocoEvaluator(_truth(), ["cat", "dog"])
    evaluator.update({1: {"boxes": np.array([[0, 0, 20, 20]]), "scores": np.array([0.9]), "labels": np.array([0])}})
    result = evaluator.compute()
    assert_png(plot_pr_curves(result, tmp_path / "pr.png"))
    assert_png(plot_pr_curves(EvalResult(*([math.nan] * 14)), tmp_path / "pr_empty.png"), min_bytes=2_000)
    matrix = np.arange(9).reshape(3, 3)
    assert_png(plot_confusion_matrix(matrix, ["cat", "dog"], tmp_path / "cm.png", score_threshold=0.5))
    many = np.random.default_rng(0).integers(0, 9, (81, 81))
    names = [f"class {k}" for k in range(80)]
    assert_png(plot_confusion_matrix(many, names, tmp_path / "cm80.png", score_threshold=0.5))


def test_the_report_folder_expands_the_home_folder(tmp_path: Path, monkeypatch) -> None:
    """val() checks ``output`` with ``~`` expanded (as train's output): the report must land in that same folder,
    not in a literal ``~`` folder below the working directory."""
    from dfine.engine.analysis import write_report

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    evaluator = CocoEvaluator(_truth(), ["cat", "dog"])
    evaluator.update({1: {"boxes": np.array([[0, 0, 20, 20]]), "scores": np.array([0.9]), "labels": np.array([0])}})
    written = write_report("~/report", evaluator.compute(), evaluator, [0, 1], ["cat", "dog"])
    assert (tmp_path / "home" / "report" / "metrics.json").is_file() and not (tmp_path / "~").exists()
    assert all(path.parent == tmp_path / "home" / "report" for path in written)


def test_a_report_folder_below_a_file_is_one_line(tmp_path: Path) -> None:
    # `dfine val --output some_file/report` ended in a NotADirectoryError traceback after the whole evaluation
    import pytest

    from dfine.engine.analysis import write_report
    from dfine.errors import InputFileError

    (tmp_path / "notes.txt").write_text("")
    evaluator = CocoEvaluator(_truth(), ["cat", "dog"])
    evaluator.update({1: {"boxes": np.array([[0, 0, 20, 20]]), "scores": np.array([0.9]), "labels": np.array([0])}})
    with pytest.raises(InputFileError, match="part of the path is a file, not a folder"):
        write_report(tmp_path / "notes.txt" / "report", evaluator.compute(), evaluator, [0, 1], ["cat", "dog"])
