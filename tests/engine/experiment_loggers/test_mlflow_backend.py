"""MLflow, offline: a file store (``MLFLOW_TRACKING_URI`` or ``./mlruns``) holding the settings, metrics by epoch,
pictures and the best model, and a resumed run continuing the same MLflow run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient

from dfine.engine.experiment_loggers.base import StartInfo
from dfine.engine.experiment_loggers.mlflow_backend import MlflowLogger, flatten


def _start(output: Path, lines: list[str], previous: dict | None = None) -> MlflowLogger:
    return MlflowLogger(StartInfo(output_dir=output, run_name=output.name, previous=previous or {}, say=lines.append))


def _picture(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (8, 6), (255, 0, 0)).save(path)
    return path


def test_a_run_in_the_file_store(tmp_path: Path) -> None:
    lines: list[str] = []
    mlflow_run = _start(tmp_path / "exp1", lines)
    mlflow_run.log_params({"hparams": {"lr": 2.5e-4, "betas": [0.9, 0.999]}, "run": {"classes": ["a" * 600]}})
    mlflow_run.log_metrics({"train/loss": 3.0, "eval/AP": 0.1}, step=1)
    mlflow_run.log_metrics({"train/loss": 2.0, "eval/AP": 0.2}, step=2)
    mlflow_run.log_image("train_batch0", _picture(tmp_path / "train_batch0.jpg"), step=1)
    best = tmp_path / "best"
    best.mkdir()
    (best / "config.json").write_text("{}")
    mlflow_run.log_model(best)
    mlflow_run.log_summary({"best/AP": 0.2}, step=2)
    mlflow_run.finish("finished")

    uri = (tmp_path / "mlruns").as_uri()
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(mlflow_run.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "exp1"
    assert client.get_experiment(run.info.experiment_id).name == "dfine"
    assert run.data.params["hparams.lr"] == "0.00025" and run.data.params["hparams.betas"] == "[0.9, 0.999]"
    assert len(run.data.params["run.classes"]) == 500  # cut to what any MLflow server takes
    assert run.data.tags["dfine.output_dir"] == str((tmp_path / "exp1").resolve())
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss")] == [(1, 3.0),
                                                                                                      (2, 2.0)]
    assert run.data.metrics["best/AP"] == 0.2 and run.data.metrics["best/epoch"] == 2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"images", "best", "dfine_settings.json"}
    assert [a.path for a in client.list_artifacts(run.info.run_id, "images")] == ["images/train_batch0.jpg"]
    assert [a.path for a in client.list_artifacts(run.info.run_id, "best")] == ["best/config.json"]
    assert lines == [(f"MLflow: run {mlflow_run.run_id} of experiment 'dfine' in {uri} "
                      f"(view: mlflow ui --backend-store-uri {uri})")]


def test_without_a_tracking_uri_the_store_is_mlruns_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "my-detector")
    here = tmp_path / "elsewhere"
    here.mkdir()
    monkeypatch.chdir(here)
    mlflow_run = _start(tmp_path / "exp", [])
    mlflow_run.finish("finished")
    assert mlflow_run.uri == (here / "mlruns").as_uri()
    # recent MLflow refuses a file store without this opt-in, which dfine gives for a local folder
    assert os.environ["MLFLOW_ALLOW_FILE_STORE"] == "true"
    run = MlflowClient(tracking_uri=mlflow_run.uri).get_run(mlflow_run.run_id)
    assert MlflowClient(tracking_uri=mlflow_run.uri).get_experiment(run.info.experiment_id).name == "my-detector"


def test_a_resume_continues_the_run(tmp_path: Path) -> None:
    first = _start(tmp_path / "exp", [])
    first.log_params({"hparams": {"patience": 0, "lr": 0.1}})
    first.log_metrics({"train/loss": 3.0}, step=1)
    first.finish("killed")
    lines: list[str] = []
    second = _start(tmp_path / "exp", lines, previous=first.resume_info())
    assert second.run_id == first.run_id and "(continued)" in lines[0]
    client = MlflowClient(tracking_uri=second.uri)
    assert client.get_run(second.run_id).info.status == "RUNNING"
    # a changed value (patience given on resume) must not fail: MLflow parameters cannot change, the first stays
    second.log_params({"hparams": {"patience": 5, "lr": 0.1, "new_option": 1}})
    second.log_metrics({"train/loss": 2.0}, step=2)
    second.finish("finished")
    run = client.get_run(second.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"hparams.patience": "0", "hparams.lr": "0.1", "hparams.new_option": "1"}
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2]


def test_a_run_from_another_store_starts_a_new_one(tmp_path: Path) -> None:
    previous = {"run_id": "0123456789abcdef", "tracking_uri": "file:///elsewhere/mlruns"}
    mlflow_run = _start(tmp_path / "exp", [], previous=previous)
    mlflow_run.finish("failed")
    run = MlflowClient(tracking_uri=mlflow_run.uri).get_run(mlflow_run.run_id)
    assert mlflow_run.run_id != previous["run_id"] and run.data.tags["dfine.resumed_from"] == previous["run_id"]
    assert run.info.status == "FAILED"


def test_flatten_names_nested_settings() -> None:
    assert dict(flatten({"model": {"backbone": {"depths": [3, 4]}, "name": "n"}, "seed": 0, "data": None})) == {
        "model.backbone.depths": "[3, 4]", "model.name": "n", "seed": "0", "data": "null"}
