"""Experiment loggers around a training run: what a real ``dfine.train`` logs to W&B and MLflow offline, a resume
continuing both runs, and the start and end of the loggers (errors before training, the run's status)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from loggerhelpers import offline_runs, read_wandb_run
from trainhelpers import TINY, tiny_data

import dfine
from dfine.engine import checkpoint as ckpt
from dfine.engine.experiment_loggers import ExperimentLog
from dfine.engine.experiment_loggers.session import experiment_log, run_settings, saved_runs
from dfine.errors import DFineError

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("wandb")


def _mlflow_run(tmp_path: Path, run_id: str) -> Any:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    return client, client.get_run(run_id)


@pytest.mark.slow
def test_train_logs_to_wandb_and_mlflow_offline_and_a_resume_continues(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    data = tiny_data(tmp_path / "data", num_train=4, num_val=2)
    output = tmp_path / "exp1"
    dfine.train(data, epochs=1, batch_size=4, output=output, logger="mlflow,wandb", profile=True, stop_epoch=0,
                **TINY)
    said = capsys.readouterr().out
    runs = saved_runs(ckpt.load_checkpoint(output / ckpt.LAST_NAME))
    assert set(runs) == {"mlflow", "wandb"}  # TensorBoard is on by default, not a choice to remember
    run_id, wandb_id = runs["mlflow"]["run_id"], runs["wandb"]["id"]
    assert f"MLflow: run {run_id} of experiment 'dfine'" in said and f"W&B: offline run {wandb_id}" in said

    client, run = _mlflow_run(tmp_path, run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "exp1"
    hparams = json.loads((output / "hparams.json").read_text())
    assert run.data.params["hparams.lr"] == json.dumps(hparams["lr"])
    assert run.data.params["model.num_queries"] == "100" and run.data.params["run.image_size"] == "[160, 160]"
    record = dfine.engine.read_metrics(output)[0]
    assert run.data.metrics["train/loss"] == pytest.approx(record["train"]["loss"])
    assert run.data.metrics["eval/AP"] == pytest.approx(record["eval"]["AP"])
    assert {"lr/backbone", "time/epoch_seconds", "profile/backward", "best/AP", "best/epoch"} <= set(run.data.metrics)
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [1]
    assert [a.path for a in client.list_artifacts(run_id, "images")] == ["images/results.png",
                                                                        "images/train_batch0.jpg"]
    assert "best" not in {a.path for a in client.list_artifacts(run_id)}  # log_model is opt-in

    (folder,) = offline_runs(output)
    logged = read_wandb_run(folder)
    assert logged.run_id == wandb_id and logged.exit_code == 0
    assert logged.config["hparams"]["lr"] == hparams["lr"] and logged.config["run"]["classes"] == [
        "circle", "square", "triangle"]
    (epoch_row,) = [row for row in logged.history if "train/loss" in row]
    assert epoch_row["epoch"] == 1 and epoch_row["train/loss"] == pytest.approx(record["train"]["loss"])
    pictures = {key.split("/")[1] for row in logged.history for key in row if key.startswith("images/")}
    assert pictures == {"train_batch0", "results"}
    assert logged.summary["best/epoch"] == 1 and "best/AP" in logged.summary

    # --resume without --logger: the same two runs go on, one epoch further
    dfine.train(data, epochs=2, batch_size=4, output=output, resume=True, log_model=True, **TINY)
    assert "(continued)" in capsys.readouterr().out
    client, run = _mlflow_run(tmp_path, run_id)
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [1, 2]
    assert [a.path for a in client.list_artifacts(run_id, "best")] == [
        "best/config.json", "best/model.safetensors", "best/preprocessor_config.json"]
    resumed = [read_wandb_run(folder) for folder in offline_runs(output)]
    assert [r.run_id for r in resumed] == [wandb_id, wandb_id]
    assert [row["epoch"] for row in resumed[1].history if "train/loss" in row] == [2]
    assert resumed[1].artifacts == [f"dfine-{wandb_id}"]


class _Config:
    def to_dict(self) -> dict[str, Any]:
        return {"num_queries": 100, "id2label": {"0": "cat"}, "label2id": {"cat": 0}}


def _trainer(output: Path) -> SimpleNamespace:
    state = SimpleNamespace(start_epoch=3, best_epoch=1, best_eval={"AP": 0.5, "AP50": 0.75, "num_images": 4,
                                                                    "per_class_AP": {"cat": 0.5}})
    return SimpleNamespace(
        output_dir=output, say=lambda line: None, model=SimpleNamespace(config=_Config()),
        hparams=SimpleNamespace(to_dict=lambda: {"lr": 0.1, "betas": [0.9, 0.999]}), data_source="data.yaml",
        class_names=["cat"], image_size=(160, 160), seed=0, eval_interval=1, device="cpu", amp_dtype=None,
        state=state, experiment=ExperimentLog())


def test_run_settings_are_plain_json(tmp_path: Path) -> None:
    settings = run_settings(_trainer(tmp_path))
    assert settings["model"] == {"num_queries": 100}  # class names are in "run", once
    assert settings["run"]["classes"] == ["cat"] and settings["run"]["image_size"] == [160, 160]
    assert settings["hparams"] == {"lr": 0.1, "betas": [0.9, 0.999]} and settings["run"]["amp"] is None


def test_a_logger_that_cannot_start_stops_the_run_before_training(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "online")  # asked for online, but there is no login
    trainer = _trainer(tmp_path / "exp")
    with pytest.raises(DFineError, match=r"^could not start logging to W&B: WANDB_MODE=online but W&B has no API "
                                         r"key: run `wandb login`"), experiment_log(["mlflow", "wandb"], trainer):
        pytest.fail("the body must not run")
    # the MLflow run started before W&B failed is closed as failed, not left running
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("dfine").experiment_id])
    assert run.info.status == "FAILED"


@pytest.mark.parametrize(("error", "status"), [(None, "FINISHED"), (KeyboardInterrupt, "KILLED"),
                                               (DFineError, "FAILED")])
def test_the_run_ends_with_the_training_status(tmp_path: Path, error: type[BaseException] | None,
                                               status: str) -> None:
    trainer = _trainer(tmp_path / "exp")
    expected = pytest.raises(error) if error else contextlib.nullcontext()
    with expected, experiment_log(["mlflow"], trainer, log_model=True) as log:
        assert trainer.experiment is log and log.names == ["tensorboard", "mlflow"]
        if error:
            raise error("stop")
    assert not trainer.experiment  # back to the empty log after the run
    client, run = _mlflow_run(tmp_path, log.resume_info()["mlflow"]["run_id"])
    assert run.info.status == status
    assert run.data.params["model.num_queries"] == "100"
    # best metrics only for a run that finished; results.png and best/ did not exist here, so nothing is uploaded
    assert ("best/AP" in run.data.metrics) == (error is None)
    if error is None:
        assert run.data.metrics["best/AP"] == 0.5 and run.data.metrics["best/epoch"] == 2
        assert "best/num_images" not in run.data.metrics
    assert "images" not in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_saved_runs_of_older_checkpoints() -> None:
    assert saved_runs(None) == {} and saved_runs({"extra": {}}) == {}
    assert saved_runs({"extra": {"experiment_runs": {"wandb": {"id": "x"}}}}) == {"wandb": {"id": "x"}}
