"""Helpers for the experiment-logger tests: an offline environment, and reading what W&B wrote offline.

(A uniquely named module rather than conftest.py, like ``tests/engine/trainhelpers.py``.)
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# variables that could send a test to a real service, or pick up the machine's login
_CLEARED = ("WANDB_API_KEY", "WANDB_DIR", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "WANDB_PROJECT",
            "WANDB_ENTITY", "WANDB_RUN_ID", "WANDB_RESUME", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME",
            "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID")


def offline_environment(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing reaches a network or the user's home: W&B offline with its folders under ``root``, no login
    anywhere, MLflow's store in ``root/mlruns``, both libraries' usage reports off."""
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    home = root / "logger-home"
    settings = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
                "WANDB_DISABLE_GIT": "true", "WANDB_DATA_DIR": str(home / "data"),
                "WANDB_CACHE_DIR": str(home / "cache"),
                "WANDB_CONFIG_DIR": str(home / "config"), "WANDB_ARTIFACT_DIR": str(home / "artifacts"),
                "NETRC": str(home / "netrc"), "MLFLOW_TRACKING_URI": (root / "mlruns").as_uri(),
                "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "WANDB_X_DISABLE_STATS": "true"}
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    # the file store's opt-in is set by MlflowLogger with os.environ: registered here so the test undoes it
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")


def _chunks(data: bytes) -> Iterator[bytes]:
    """The records of a ``.wandb`` file: a 7-byte header (``:W&B``, magic, version), then LevelDB's log format —
    32 KiB blocks of records, each with a 7-byte header (checksum, length, type: 1 whole, 2 first, 3 middle, 4
    last part)."""
    assert data[:4] == b":W&B", "not a W&B run file"
    pos, block, parts = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            parts = chunk
        elif kind == 3:
            parts += chunk
        elif kind == 4:
            yield parts + chunk


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


@dataclass
class WandbRun:
    """What an offline W&B run file holds: its id, config, history rows and final summary."""

    folder: Path
    run_id: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)
    exit_code: int | None = None


def read_wandb_run(folder: Path) -> WandbRun:
    """Parse the ``run-<id>.wandb`` file of an offline run folder (``.../wandb/offline-run-...``).

    W&B's service writes the file out when it stops, not when the run finishes: it is stopped first (as the end of
    the process would).
    """
    import wandb
    from wandb.proto import wandb_internal_pb2

    wandb.teardown()

    (path,) = folder.glob("run-*.wandb")
    run = WandbRun(folder)
    for raw in _chunks(path.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id = record.run.run_id or run.run_id  # later run records update other fields
            run.config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            run.config.update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            run.summary.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "artifact":
            run.artifacts.append(record.artifact.name)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def offline_runs(output_dir: Path) -> list[Path]:
    """The offline W&B run folders of a training run, oldest first."""
    return sorted((output_dir / "wandb").glob("offline-run-*"))
