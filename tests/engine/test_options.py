"""Options of ``dfine train`` / ``dfine val`` and their Python twins: checked before anything slow starts, each
bad value a one-line error; defaults that fit the machine; messages that say what happens."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from trainhelpers import TINY

import dfine
from dfine.cli.main import main
from dfine.cli.train import parse_assignment
from dfine.data import collate
from dfine.engine import api, build
from dfine.engine.build import ModelReport, check_config_overrides
from dfine.engine.hparams import resolve_hyperparameters
from dfine.errors import ConfigError


@pytest.mark.parametrize(("options", "message"), [
    (["--set", "stop_epoch=abc"], "stop_epoch must be an integer, got 'abc'"),
    (["--set", "ema_decay=[1]"], "ema_decay must be a number, got [1]"),
    (["--set", "freeze_backbone_norm=3"], "freeze_backbone_norm must be true or false, got 3"),
    (["--set", "num_queries=0"], "num_queries must be >= 1, got 0"),
    (["--set", "num_queries=many"], "num_queries must be an integer, got 'many'"),
    (["--set", "num_denoising=-1"], "num_denoising must be >= 0, got -1"),
    (["--set", "label_noise_ratio=2"], "label_noise_ratio must be from 0 to 1, got 2"),
    (["--seed", "-5"], "the seed must be an integer from 0 to 2**63 - 1, got -5"),
    (["--workers", "-1"], "the number of data-loading workers must be an integer >= 0, got -1"),
])  # fmt: skip
def test_bad_train_options_fail_before_the_data_is_read(tmp_path: Path, options: list[str], message: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # the data path does not even exist: the option is what is reported, at once
    assert main(["train", "--data", str(tmp_path / "unused"), "--no-pretrained-backbone", *options]) == 2
    assert capsys.readouterr().err.strip() == f"dfine train: error: {message}"


@pytest.mark.parametrize("workers", [-1, 1.5, "2", True])
def test_val_workers_must_be_a_count(tmp_path: Path, workers: object) -> None:
    # checked before the model or the data is read (both paths here do not exist)
    with pytest.raises(ConfigError, match=f"^the number of data-loading workers must be an integer >= 0, got "
                                          f"{re.escape(repr(workers))}$"):
        dfine.val(tmp_path / "m", tmp_path / "d", workers=workers)


def test_override_types_in_python() -> None:
    with pytest.raises(ConfigError, match="^stop_epoch must be an integer, got 'abc'$"):
        resolve_hyperparameters("n", num_train_images=64, batch_size=8, overrides={"stop_epoch": "abc"})
    with pytest.raises(ConfigError, match=r"^betas must be a list of 2 numbers, got \[0.9\]$"):
        resolve_hyperparameters("n", num_train_images=64, batch_size=8, overrides={"betas": [0.9]})
    hp = resolve_hyperparameters("n", num_train_images=64, batch_size=8, overrides={"ema_decay": 0, "stop_epoch": 3.0})
    assert hp.ema_decay == 0.0 and isinstance(hp.ema_decay, float) and hp.stop_epoch == 3
    assert check_config_overrides({"num_queries": 100.0, "decoder_n_points": [2, 4, 4]}) == {
        "num_queries": 100, "decoder_n_points": [2, 4, 4]}
    with pytest.raises(ConfigError, match="^decoder_n_points must be >= 1, got"):
        check_config_overrides({"decoder_n_points": [4, 0, 4]})


def test_set_reads_exponent_numbers() -> None:
    # YAML 1.1 (PyYAML) reads 1e-4 as text; a user writing it means the number
    assert parse_assignment("ema_decay=1e-4") == ("ema_decay", 1e-4)
    assert parse_assignment("x=2.5E3") == ("x", 2500.0)
    assert parse_assignment("size=e5") == ("size", "e5")


def test_default_workers_fit_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert collate.default_workers() == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    assert collate.default_workers() == 4


def test_train_command_leaves_output_and_workers_to_the_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_train(data: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return dfine.engine.TrainResult(tmp_path / "best", tmp_path / "last.pt")

    monkeypatch.setattr(api, "train", fake_train)
    assert main(["train", "--data", str(tmp_path)]) == 0
    # None, so that the API can tell "not given" from "given": the core count decides the workers, and an
    # explicit --output with --resume PATH is announced as ignored
    assert seen["workers"] is None and seen["output"] is None


def test_train_uses_the_default_worker_count(tmp_path: Path, tiny_yaml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Built(Exception):
        pass

    def fake_build_loaders(*args: Any, workers: int, **kwargs: Any) -> Any:
        raise Built(workers)

    monkeypatch.setattr(build, "build_loaders", fake_build_loaders)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    with pytest.raises(Built) as info:
        dfine.train(tiny_yaml, epochs=1, batch_size=4, output=tmp_path / "run", **{**TINY, "workers": None})
    assert info.value.args == (1,)


def test_train_help_says_what_a_preset_starts_from(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "A preset name trains that size from scratch, its backbone initialised from ImageNet weights" in text
    assert "unless --no-pretrained-backbone" in text


def test_stage_two_epochs_are_counted_from_one() -> None:
    # the console says "epoch 8/8" and "Stop epoch 8" for the last epoch: the summary must count the same way
    hp = resolve_hyperparameters("n", num_train_images=64, batch_size=8, epochs=8, overrides={"stop_epoch": 7})
    assert "epochs         8; stage 2: epoch 8 (no strong augmentation" in hp.summary()
    hp = resolve_hyperparameters("n", num_train_images=64, batch_size=8, epochs=8,
                                 overrides={"stop_epoch": 5, "warmup_iters": 1, "ema_warmups": 2})
    summary = hp.summary()
    assert "stage 2: epochs 6..8 (" in summary
    assert "linear warm-up over 1 iteration, then" in summary and "warm-up 2 iterations" in summary


def test_resumed_model_is_not_said_to_train_from_scratch() -> None:
    report = ModelReport("runs/k/last.pt", "n", False, "from the checkpoint", resumed=True)
    assert report.summary() == ("Model: D-FINE-N, resuming runs/k/last.pt (a from-scratch run); backbone: from the "
                                "checkpoint")
    assert "training dfine-n-coco from scratch" in ModelReport("dfine-n-coco", "n", False, "random").summary()
