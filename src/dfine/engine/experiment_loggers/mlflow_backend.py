"""MLflow as an experiment logger (``pip install "dfine[mlflow]"``: ``mlflow-skinny``, the tracking client alone).

**Where.** ``MLFLOW_TRACKING_URI`` (or ``mlflow.set_tracking_uri`` in Python) when set, a tracking server or a
database; otherwise a file store in ``./mlruns`` of the current folder, MLflow's classic local layout, which works
offline and needs no server or database package (view it with ``mlflow ui --backend-store-uri ./mlruns``). Recent
MLflow releases refuse a file store unless ``MLFLOW_ALLOW_FILE_STORE=true``: it is set for this process when the
store is a local folder and the variable is unset. The experiment is ``MLFLOW_EXPERIMENT_NAME`` or ``dfine``; the
run is named after the run folder. Calls go through an ``MlflowClient`` with an explicit run id, so an MLflow run
the caller has active in Python is left alone.

**What.** Settings as flat parameters (``hparams.lr``, ``model.num_queries``, ``run.image_size``; long values are
cut, the whole dict is also stored as ``dfine_settings.json``), metrics by epoch, pictures under ``images/``, and
with ``log_model`` the ``best/`` folder under ``best/``.

**Resume.** The run id and tracking URI are saved in ``last.pt``; ``--resume`` continues that run when it is still
in the same store, else starts a new one tagged ``dfine.resumed_from``. MLflow parameters cannot change: a value a
resume changed (``patience``) keeps its first value there, and ``dfine_settings.json`` is rewritten with the new one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from dfine.engine.experiment_loggers.base import StartInfo

DEFAULT_EXPERIMENT = "dfine"
_STATUS = {"finished": "FINISHED", "failed": "FAILED", "killed": "KILLED"}
_MAX_VALUE = 500  # parameter values: the limit of older MLflow servers (newer ones take more)
_BATCH = 100  # parameters per log_batch call, MLflow's limit


def tracking_uri(mlflow: Any) -> str:
    """The user's tracking URI when set, else a file store in ``./mlruns``."""
    chosen = getattr(mlflow, "is_tracking_uri_set", None)
    if os.environ.get("MLFLOW_TRACKING_URI") or (chosen is not None and chosen()):
        return str(mlflow.get_tracking_uri())
    return (Path.cwd() / "mlruns").as_uri()


def is_local_folder(uri: str) -> bool:
    """A file store: ``file:`` URI or a plain path (a one-letter scheme is a Windows drive)."""
    return len(urlparse(uri).scheme) <= 1 or uri.startswith("file:")


def flatten(values: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(dotted name, text)`` for every leaf of a nested dict; lists as JSON."""
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from flatten(value, name + ".")
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            yield name, text if len(text) <= _MAX_VALUE else text[:_MAX_VALUE - 3] + "..."


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class MlflowLogger:
    """One MLflow run (see the module's notes on the store and on resuming)."""

    name = "mlflow"
    epoch_scalars = True

    def __init__(self, info: StartInfo) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri(mlflow)
        if is_local_folder(self.uri):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=self.uri)
        previous = info.previous
        self.run_id = self._continued(previous)
        if self.run_id is None:
            experiment_name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
            experiment = self.client.get_experiment_by_name(experiment_name)
            experiment_id = (experiment.experiment_id if experiment is not None
                             else self.client.create_experiment(experiment_name))
            tags = {"dfine.output_dir": str(info.output_dir.resolve())}
            if previous.get("run_id"):
                tags["dfine.resumed_from"] = str(previous["run_id"])
            self.run_id = self.client.create_run(experiment_id, run_name=info.run_name, tags=tags).info.run_id
        else:
            experiment_name = self.client.get_experiment(self._run.info.experiment_id).name
        continued = " (continued)" if self.run_id == previous.get("run_id") else ""
        where = f"{self.uri} (view: mlflow ui --backend-store-uri {self.uri})" if is_local_folder(self.uri) \
            else self.uri
        info.say(f"MLflow: run {self.run_id}{continued} of experiment '{experiment_name}' in {where}")

    def _continued(self, previous: Mapping[str, Any]) -> str | None:
        """The previous run's id when it can be continued here, else None."""
        run_id = previous.get("run_id")
        if not run_id or previous.get("tracking_uri") != self.uri:
            return None
        try:
            self._run = self.client.get_run(run_id)
        except Exception:  # noqa: BLE001 (deleted, or not in this store: a new run, tagged with the old id)
            return None
        if self._run.info.lifecycle_stage != "active":
            return None
        self.client.update_run(run_id, status="RUNNING")
        return str(run_id)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        new = [Param(name, text) for name, text in flatten(params) if name not in existing]
        for chunk in _chunks(new, _BATCH):
            self.client.log_batch(self.run_id, params=list(chunk))
        self.client.log_dict(self.run_id, json.loads(json.dumps(params, default=str)), "dfine_settings.json")

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(name, float(value), now, step) for name, value in metrics.items()]
        for chunk in _chunks(batch, 1000):  # MLflow's limit of metrics per call
            self.client.log_batch(self.run_id, metrics=list(chunk))

    def log_image(self, name: str, path: Path, step: int) -> None:
        self.client.log_artifact(self.run_id, str(path), "images")

    def log_summary(self, metrics: Mapping[str, float], step: int) -> None:
        self.log_metrics({**metrics, "best/epoch": float(step)}, step)

    def log_model(self, folder: Path) -> None:
        self.client.log_artifacts(self.run_id, str(folder), folder.name)

    def resume_info(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "tracking_uri": self.uri}

    def finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, _STATUS.get(status, "FAILED"))
