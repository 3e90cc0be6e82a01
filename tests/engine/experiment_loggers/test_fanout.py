"""The fan-out the trainer calls: one set of metric names for every logger, and a failing logger switched off."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from dfine.engine.experiment_loggers import ExperimentLog, epoch_metrics, metric_name


class Recorder:
    """A backend that remembers its calls; ``broken`` names a method that raises."""

    def __init__(self, name: str, epoch_scalars: bool = True, broken: str = "") -> None:
        self.name, self.epoch_scalars, self.broken = name, epoch_scalars, broken
        self.calls: list[tuple[str, Any]] = []

    def _record(self, method: str, *args: Any) -> None:
        if method == self.broken:
            raise ConnectionError(f"{method} failed\nsecond line of a long library message")
        self.calls.append((method, args))

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._record("log_params", params)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._record("log_metrics", dict(metrics), step)

    def log_image(self, name: str, path: Path, step: int) -> None:
        self._record("log_image", name, path, step)

    def log_summary(self, metrics: Mapping[str, float], step: int) -> None:
        self._record("log_summary", dict(metrics), step)

    def log_model(self, folder: Path) -> None:
        self._record("log_model", folder)

    def resume_info(self) -> dict[str, Any]:
        return {"id": f"{self.name}-run"}

    def finish(self, status: str) -> None:
        self._record("finish", status)


RECORD = {"epoch": 2, "lr": [1e-5, 1e-4], "lr_groups": ["backbone", "default"],
          "train": {"loss": 3.5, "loss_vfl": 0.5, "loss_fgl": None},
          "eval": {"AP": 0.25, "AP50": 0.5, "APs": None, "per_class_AP": {"cat": 0.1}}, "time": 12.5, "stage": 1,
          "best_AP": 0.25, "timestamp": 1.0}


def test_epoch_metrics_use_the_tensorboard_names() -> None:
    assert epoch_metrics(RECORD) == {
        "train/loss": 3.5, "train/loss_vfl": 0.5, "lr/backbone": 1e-5, "lr/default": 1e-4, "eval/AP": 0.25,
        "eval/AP50": 0.5, "time/epoch_seconds": 12.5, "stage": 1.0}  # nulls, nested values and best_AP left out
    assert epoch_metrics({"epoch": 0, "lr": [0.1, 0.2], "lr_groups": ["only"]}) == {"lr/only": 0.1,
                                                                                     "lr/group_1": 0.2}


def test_a_segmentation_models_mask_metrics_are_logged_beside_the_box_metrics() -> None:
    record = {**RECORD, "eval": {**RECORD["eval"], "segm": {"AP": 0.2, "AP50": 0.4, "per_class_AP": {"cat": 0.1}}}}
    metrics = epoch_metrics(record)
    assert metrics["eval/mask_AP"] == 0.2 and metrics["eval/mask_AP50"] == 0.4 and metrics["eval/AP"] == 0.25
    recorder = Recorder("r")
    ExperimentLog([recorder]).log_summary({"AP": 0.3, "segm": {"AP": 0.25}}, epoch=4)
    assert recorder.calls == [("log_summary", ({"best/AP": 0.3, "best/mask_AP": 0.25}, 5))]


@pytest.mark.parametrize(("name", "expected"), [
    ("profile/loss + matching", "profile/loss_matching"),
    ("profile/augmentation (workers)", "profile/augmentation_workers"),
    ("eval/AP50", "eval/AP50"),
    ("lr/no_decay", "lr/no_decay"),
])  # fmt: skip
def test_metric_names_every_logger_accepts(name: str, expected: str) -> None:
    assert metric_name(name) == expected


def test_calls_fan_out_with_epochs_counted_from_one(tmp_path: Path) -> None:
    picture = tmp_path / "train_batch0.jpg"
    picture.write_bytes(b"jpeg")
    wandb, tensorboard = Recorder("wandb"), Recorder("tensorboard", epoch_scalars=False)
    log = ExperimentLog([tensorboard, wandb])
    log.log_params({"hparams": {"lr": 0.1}})
    log.log_epoch(RECORD)
    log.log_profile(2, {"loss + matching": 1.5, "epoch": 4.0})
    log.log_image(picture, epoch=0)
    log.log_image(tmp_path / "missing.png", epoch=0)  # a picture that could not be drawn: nothing to log
    log.log_summary({"AP": 0.25, "AP50": 0.5, "num_images": 4}, epoch=1)
    log.finish()
    assert wandb.calls == [
        ("log_params", ({"hparams": {"lr": 0.1}},)),
        ("log_metrics", (epoch_metrics(RECORD), 3)),
        ("log_metrics", ({"profile/loss_matching": 1.5, "profile/epoch": 4.0}, 3)),
        ("log_image", ("train_batch0", picture, 1)),
        ("log_summary", ({"best/AP": 0.25, "best/AP50": 0.5, "best/num_images": 4.0}, 2)),
        ("finish", ("finished",)),
    ]
    # TensorBoard's epoch scalars come from MetricsLogger: everything else reaches it
    assert [call[0] for call in tensorboard.calls] == ["log_params", "log_metrics", "log_image", "log_summary",
                                                       "finish"]
    assert not log and log.names == []


def test_a_failing_logger_is_switched_off_and_training_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    broken, healthy = Recorder("wandb", broken="log_metrics"), Recorder("mlflow")
    log = ExperimentLog([broken, healthy])
    with caplog.at_level(logging.WARNING, logger="dfine"):
        log.log_epoch(RECORD)
        log.log_epoch({**RECORD, "epoch": 3})
    assert log.names == ["mlflow"]
    assert [c[1][1] for c in healthy.calls if c[0] == "log_metrics"] == [3, 4]
    assert broken.calls == [("finish", ("failed",))]  # closed as failed, once
    (message,) = [r.getMessage() for r in caplog.records]
    assert message == ("wandb: logging the epoch's metrics failed (log_metrics failed); it logs nothing more in this "
                       "run (metrics.jsonl has everything)")
    # a resume still continues the switched-off logger's run
    assert log.resume_info() == {"wandb": {"id": "wandb-run"}, "mlflow": {"id": "mlflow-run"}}


def test_only_the_chosen_loggers_are_continued_on_resume() -> None:
    log = ExperimentLog([Recorder("tensorboard"), Recorder("mlflow")], remember=["mlflow"])
    assert log.resume_info() == {"mlflow": {"id": "mlflow-run"}}


def test_an_empty_log_does_nothing(tmp_path: Path) -> None:
    log = ExperimentLog()
    log.log_epoch(RECORD)
    log.log_image(tmp_path, epoch=0)
    log.finish("failed")
    assert log.resume_info() == {}
