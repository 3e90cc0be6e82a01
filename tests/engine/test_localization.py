"""The uncertainty report of dfine val --output: Spearman's ρ between each box's uncertainty and its localisation
error against the ground-truth box it matched."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from test_logger import assert_png

from dfine.engine.analysis import write_report
from dfine.engine.evaluator import CocoEvaluator
from dfine.engine.localization import localization_errors, uncertainty_report


def _truth(count: int = 12) -> dict:
    """One 40 x 40 object per image, plus a crowd region in image 0."""
    annotations = [{"id": i + 1, "image_id": i, "bbox": [20, 20, 40, 40], "category_id": 0, "iscrowd": 0,
                    "area": 1600} for i in range(count)]
    annotations.append({"id": 99, "image_id": 0, "bbox": [0, 0, 100, 100], "category_id": 0, "iscrowd": 1,
                        "area": 10000})
    return {"images": [{"id": i, "width": 100, "height": 100, "file_name": f"{i}.jpg"} for i in range(count)],
            "annotations": annotations, "categories": [{"id": 0, "name": "box"}]}


def _shifted(count: int = 12) -> dict:
    """Image i: the object's box shifted i pixels right (error grows with i), and a far-off extra detection."""
    return {i: (np.array([[20 + i, 20, 60 + i, 60], [80, 80, 95, 95]], dtype=np.float32),
                np.array([0.9, 0.9], dtype=np.float32), np.array([0, 0])) for i in range(count)}


def test_uncertainty_that_follows_the_error_gives_rho_one_and_its_reverse_minus_one() -> None:
    truth, predictions = _truth(), _shifted()
    rising = {i: np.array([0.01 * (i + 1), 5.0], dtype=np.float32) for i in predictions}
    report = uncertainty_report(truth, predictions, rising)
    # the far-off box matches nothing (IoU 0) and the crowd region is no object, so one pair per image
    assert report.detections == 12 and math.isclose(report.spearman_rho, 1.0) and report.p_value < 1e-6
    assert np.allclose(np.sort(report.error), report.error)  # error grows with the shift
    falling = {i: np.array([1.0 / (i + 1), 5.0], dtype=np.float32) for i in predictions}
    assert math.isclose(uncertainty_report(truth, predictions, falling).spearman_rho, -1.0)


def test_low_scores_are_left_out_and_too_few_pairs_give_no_rho() -> None:
    truth, predictions = _truth(2), _shifted(2)
    spreads = {i: np.array([0.1, 0.2], dtype=np.float32) for i in predictions}
    uncertainty, error = localization_errors(truth, predictions, spreads, score_threshold=0.95)
    assert len(uncertainty) == len(error) == 0
    report = uncertainty_report(truth, predictions, spreads)
    assert report.detections == 2 and math.isnan(report.spearman_rho)
    assert report.as_dict()["spearman_rho"] is None  # JSON-ready


def test_the_report_folder_gains_the_uncertainty_plot_and_numbers(tmp_path: Path) -> None:
    truth, predictions = _truth(), _shifted()
    evaluator = CocoEvaluator(truth, ["box"])
    evaluator.update({i: {"boxes": boxes, "scores": scores, "labels": labels,
                          "uncertainty": np.array([0.01 * (i + 1), 5.0])}
                      for i, (boxes, scores, labels) in predictions.items()})
    written = write_report(tmp_path / "report", evaluator.compute(), evaluator, [0], ["box"])
    assert {p.name for p in written} >= {"uncertainty.json", "uncertainty.png"}
    numbers = json.loads((tmp_path / "report" / "uncertainty.json").read_text())
    assert numbers["spearman_rho"] == 1.0 and numbers["detections"] == 12
    assert_png(tmp_path / "report" / "uncertainty.png")
    # without uncertainties (an exported model, an old evaluator) there is no such report
    plain = CocoEvaluator(truth, ["box"])
    plain.update({i: {"boxes": b, "scores": s, "labels": c} for i, (b, s, c) in predictions.items()})
    assert "uncertainty.json" not in {p.name for p in write_report(tmp_path / "plain", plain.compute(), plain, [0],
                                                                    ["box"])}
