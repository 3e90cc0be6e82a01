"""W&B, offline: never a login prompt, and the offline run folder holding the settings, metrics by epoch, pictures,
best metrics and model; a resumed run continuing the same run id."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("wandb")

import wandb
from loggerhelpers import offline_runs, read_wandb_run

from dfine.engine.experiment_loggers.base import StartInfo
from dfine.engine.experiment_loggers.wandb_backend import WandbLogger, wandb_mode
from dfine.errors import ConfigError


def _start(output: Path, lines: list[str], previous: dict | None = None) -> WandbLogger:
    return WandbLogger(StartInfo(output_dir=output, run_name=output.name, previous=previous or {}, say=lines.append))


def test_the_mode_never_asks_for_a_login(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE")
    assert wandb_mode(wandb) == "offline"  # no key anywhere: offline rather than a prompt
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(ConfigError, match=r"^WANDB_MODE=online but W&B has no API key: run `wandb login`"):
        wandb_mode(wandb)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode(wandb) == "disabled"
    monkeypatch.setenv("WANDB_MODE", "")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode(wandb) == "online"


def test_an_offline_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    monkeypatch.delenv("WANDB_MODE")  # no login: offline by itself
    picture = tmp_path / "train_batch0.jpg"
    Image.new("RGB", (8, 6), (0, 0, 255)).save(picture)
    best = tmp_path / "best"
    best.mkdir()
    (best / "config.json").write_text("{}")
    lines: list[str] = []
    output = tmp_path / "exp1"
    run = _start(output, lines)
    run.log_params({"hparams": {"lr": 2.5e-4}, "run": {"classes": ["cat", "dog"]}})
    run.log_image("train_batch0", picture, step=1)
    run.log_metrics({"train/loss": 3.0, "eval/AP": 0.1}, step=1)
    run.log_metrics({"train/loss": 2.0, "eval/AP": 0.2}, step=2)
    run.log_summary({"best/AP": 0.2}, step=2)
    run.log_model(best)
    info = run.resume_info()
    run.finish("finished")

    (folder,) = offline_runs(output)
    assert lines == [f"W&B: offline run {info['id']} in {folder}; upload it with: wandb sync {folder}"]
    logged = read_wandb_run(folder)
    assert logged.run_id == info["id"] and info["project"] == "dfine"
    assert logged.config["hparams"] == {"lr": 2.5e-4} and logged.config["run"] == {"classes": ["cat", "dog"]}
    rows = [{k: v for k, v in row.items() if not k.startswith("_")} for row in logged.history]
    assert [(r["epoch"], r["train/loss"], r["eval/AP"]) for r in rows if "train/loss" in r] == [(1, 3.0, 0.1),
                                                                                                 (2, 2.0, 0.2)]
    (image_row,) = [r for r in rows if "images/train_batch0/path" in r]
    assert image_row["epoch"] == 1 and (folder / "files" / image_row["images/train_batch0/path"]).is_file()
    assert logged.summary["best/AP"] == 0.2 and logged.summary["best/epoch"] == 2
    assert logged.artifacts == [f"dfine-{info['id']}"] and logged.exit_code == 0


def test_a_resume_continues_the_run_id(tmp_path: Path) -> None:
    output = tmp_path / "exp"
    first = _start(output, [])
    first.log_metrics({"train/loss": 3.0}, step=1)
    previous = first.resume_info()
    first.finish("killed")
    wandb.teardown()
    lines: list[str] = []
    second = _start(output, lines, previous=previous)
    second.log_metrics({"train/loss": 2.0}, step=2)
    second.finish("finished")
    assert second.resume_info()["id"] == previous["id"] and "(continued)" in lines[0]
    # offline, the resumed part is a second folder of the same run: `wandb sync` uploads both
    runs = [read_wandb_run(folder) for folder in offline_runs(output)]
    assert [r.run_id for r in runs] == [previous["id"]] * 2 and [r.exit_code for r in runs] == [255, 0]


def test_wandb_dir_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))
    run = _start(tmp_path / "exp", [])
    run.finish("finished")
    assert not (tmp_path / "exp" / "wandb").exists()
    (folder,) = offline_runs(tmp_path / "elsewhere")
    assert read_wandb_run(folder).run_id == run.resume_info()["id"]
