"""Which task a run trains (detect / segment), and the model each choice builds from presets and checkpoints."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

import dfine
from dfine.config import DFineConfig
from dfine.engine.build import build_training_model
from dfine.engine.task import check_task, trains_segmentation
from dfine.errors import ConfigError
from dfine.hub.convert import MASK_BRANCH

SHAPES = ["circle", "square", "triangle"]


def _tiny(segment: bool) -> dfine.DFineForObjectDetection:
    cls = dfine.DFineForInstanceSegmentation if segment else dfine.DFineForObjectDetection
    torch.manual_seed(0)
    return cls(DFineConfig.from_preset("dfine-n-coco", id2label=dict(enumerate(SHAPES)), num_queries=50))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    paths = {"detect": root / "det", "segment": root / "seg"}
    _tiny(False).save_pretrained(paths["detect"])
    _tiny(True).save_pretrained(paths["segment"])
    return paths


def test_the_task_follows_the_argument_then_the_resumed_run_then_the_model(saved: dict[str, Path]) -> None:
    assert trains_segmentation(None, "dfine-n-coco", None) is False
    assert trains_segmentation("segment", "dfine-n-coco", None) is True
    assert trains_segmentation(None, saved["segment"], None) is True
    assert trains_segmentation(None, saved["detect"], None) is False
    assert trains_segmentation("detect", saved["segment"], None) is False
    assert trains_segmentation(None, _tiny(True), None) is True
    # a resumed run continues as what it was
    assert trains_segmentation("detect", "dfine-n-coco", {"use_mask_head": True}) is True
    assert trains_segmentation("segment", "dfine-n-coco", {}) is False


def test_an_unknown_task_is_one_line() -> None:
    check_task(None)
    check_task("segment")
    with pytest.raises(ConfigError, match="task must be one of detect, segment .* got 'segmentation'"):
        check_task("segmentation")
    with pytest.raises(ConfigError, match="task must be one of"):
        dfine.train("nowhere.yaml", task="masks")


def test_a_preset_becomes_a_segmentation_model() -> None:
    model, report = build_training_model("dfine-n-coco", SHAPES, pretrained_backbone=False,
                                         config_overrides={"num_queries": 50}, segment=True)
    assert isinstance(model, dfine.DFineForInstanceSegmentation) and model.config.use_mask_head
    assert any(MASK_BRANCH.match(k) for k in model.state_dict())
    assert "instance segmentation" in report.notes[0]


def test_a_detection_checkpoint_starts_a_segmentation_model_with_a_fresh_mask_branch(
        saved: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    detector = dfine.DFineForObjectDetection.from_pretrained(saved["detect"])
    with caplog.at_level(logging.WARNING, logger="dfine"):
        model, report = build_training_model(str(saved["detect"]), SHAPES, segment=True)
    assert isinstance(model, dfine.DFineForInstanceSegmentation)
    assert any("mask branch starts freshly initialised" in note for note in report.notes)
    ours, theirs = model.state_dict(), detector.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in theirs.items() if "num_batches_tracked" not in k)
    assert any(MASK_BRANCH.match(k) for k in ours) and not any(MASK_BRANCH.match(k) for k in theirs)


def test_a_segmentation_checkpoint_keeps_its_mask_branch_or_drops_it_for_detection(saved: dict[str, Path]) -> None:
    original = dfine.DFineForInstanceSegmentation.from_pretrained(saved["segment"]).state_dict()
    model, report = build_training_model(str(saved["segment"]), SHAPES, segment=True)
    masks = {k: v for k, v in model.state_dict().items() if MASK_BRANCH.match(k)}
    assert masks and all(torch.equal(v, original[k]) for k, v in masks.items())
    assert not any("mask branch" in note for note in report.notes[1:])
    detector, report = build_training_model(str(saved["segment"]), SHAPES, segment=False)
    assert type(detector) is dfine.DFineForObjectDetection and not detector.config.use_mask_head
    assert any("mask branch is left out" in note for note in report.notes)
