"""Resuming continues exactly: 2 epochs straight == 1 epoch, a kill, and a resumed second epoch.

The second epoch is the stop epoch, so the resumed run also reloads the best stage-1 state and restarts the EMA, as
the straight run does; strong augmentation (random) runs in epoch 1, so the random state must be restored too.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch
from trainhelpers import TINY, tiny_data

import dfine
from dfine.engine import trainer as trainer_module
from dfine.engine.logger import read_metrics


class Killed(Exception):
    pass


def _assert_same(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if a[name].dtype.is_floating_point:
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=f"{what}: {name}")
        else:
            assert torch.equal(a[name], b[name]), f"{what}: {name}"


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path: Path, tiny_yaml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a large LR and a real EMA decay, so that a wrong data order, augmentation or EMA state shows far above 1e-6
    args = dict(epochs=2, batch_size=4, seed=3, lr=1e-3, ema_decay=0.5, ema_restart_decay=0.6, **TINY)
    straight = dfine.train(tiny_yaml, output=tmp_path / "straight", **args)

    real_end = trainer_module.Trainer._end_of_epoch

    def end_then_die(self, epoch, *rest, **kwargs):
        real_end(self, epoch, *rest, **kwargs)  # last.pt of this epoch is on disk ...
        raise Killed  # ... and the process dies before the next one

    monkeypatch.setattr(trainer_module.Trainer, "_end_of_epoch", end_then_die)
    with pytest.raises(Killed):
        dfine.train(tiny_yaml, output=tmp_path / "killed", **args)
    monkeypatch.undo()
    assert torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["epoch"] == 0

    # the same call with resume=<path>: the output becomes the checkpoint's folder, the seed the checkpoint's
    resumed = dfine.train(tiny_yaml, output=tmp_path / "elsewhere", resume=tmp_path / "killed" / "last.pt",
                          **{**args, "seed": 99})
    assert resumed.output_dir == tmp_path / "killed"

    a = torch.load(straight.last_checkpoint, weights_only=True)
    b = torch.load(resumed.last_checkpoint, weights_only=True)
    assert a["epoch"] == b["epoch"] == 1 and a["stage"] == b["stage"] == 2
    _assert_same(a["model"], b["model"], "model")
    _assert_same(a["ema"]["module"], b["ema"]["module"], "ema")
    assert a["ema"]["updates"] == b["ema"]["updates"] and a["ema"]["decay"] == b["ema"]["decay"]
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]
    assert a["best_metric"] == pytest.approx(b["best_metric"], abs=1e-9)
    # metrics.jsonl continues: both epochs once, the second equal to the straight run's
    history_a, history_b = read_metrics(straight.output_dir), read_metrics(resumed.output_dir)
    assert [h["epoch"] for h in history_b] == [0, 1]
    assert history_b[1]["train"]["loss"] == pytest.approx(history_a[1]["train"]["loss"], rel=1e-5)


def test_resume_true_uses_the_output_folder(tmp_path: Path, tiny_yaml: Path) -> None:
    run = dfine.train(tiny_yaml, epochs=1, batch_size=4, output=tmp_path / "run", eval_interval=0, **TINY)
    # the finished run extended by one epoch: resume=True continues <output>/last.pt
    more = dfine.train(tiny_yaml, epochs=2, batch_size=4, output=tmp_path / "run", resume=True, eval_interval=0,
                       **TINY)
    assert more.output_dir == run.output_dir
    assert torch.load(more.last_checkpoint, weights_only=True)["epoch"] == 1
    with pytest.raises(dfine.DFineError, match="options cannot change when resuming: num_denoising differ"):
        dfine.train(tiny_yaml, epochs=3, output=tmp_path / "run", resume=True, **{**TINY, "num_denoising": 0})


def test_resume_path_announces_the_options_it_ignores(trained_run, tmp_path: Path, tiny_yaml: Path,
                                                      caplog: pytest.LogCaptureFixture,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "k"
    run.mkdir()
    shutil.copy(trained_run.last_checkpoint, run / "last.pt")
    # the finished 2-epoch run, "continued" to 2 epochs: nothing left to train, only the wiring runs
    with caplog.at_level(logging.WARNING, logger="dfine"):
        result = dfine.train(tiny_yaml, epochs=2, batch_size=4, output=tmp_path / "k2", resume=run / "last.pt",
                             **{**TINY, "seed": 5})
    assert result.output_dir == run and not (tmp_path / "k2").exists()
    warnings = [r.getMessage() for r in caplog.records]
    assert "resuming a run that already finished its 2 of 2 epochs: nothing to train (pass a larger epochs=N / " \
           "--epochs N to continue it)" in warnings
    assert f"resuming: output={tmp_path / 'k2'} ignored, the checkpoint's folder {run} is kept" in warnings
    assert "resuming: seed=5 ignored, the checkpoint's 0 is kept" in warnings
    assert f"Model: D-FINE-N, resuming {run / 'last.pt'} (a from-scratch run)" in capsys.readouterr().out


def test_resuming_on_another_data_set_says_so(trained_run, tmp_path: Path, tiny_yaml: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Same classes, other images: allowed (it may be the same data moved), but best/ then compares AP across two
    validation sets, so the summary says which data the run started on."""
    other = tiny_data(tmp_path / "other", seed=3)
    run = tmp_path / "k"
    run.mkdir()
    shutil.copy(trained_run.last_checkpoint, run / "last.pt")
    dfine.train(other, epochs=2, batch_size=4, resume=run / "last.pt", **TINY)
    out = capsys.readouterr().out
    assert f"resuming on {other}, but the run so far trained on {tiny_yaml.resolve()}" in out
    dfine.train(tiny_yaml, epochs=2, batch_size=4, resume=run / "last.pt", **TINY)  # the same data: no such note
    assert "but the run so far trained on" not in capsys.readouterr().out


@pytest.mark.parametrize(("betas", "refused"), [([0.9, 0.999], False), ((0.9, 0.999), False), ([0.8, 0.999], True)])
def test_resuming_with_the_same_list_option_is_not_a_change(betas, refused: bool) -> None:
    # The checkpoint stores betas as a list (JSON-like hparams), --set betas=[...] gives a tuple: same values.
    from dfine.engine.hparams import check_overrides, resolve_hyperparameters
    from dfine.engine.resuming import check_resume_options
    from dfine.errors import ConfigError

    hp = resolve_hyperparameters("n", num_train_images=8, overrides={"betas": [0.9, 0.999]})
    state = {"config": {}, "hparams": hp.to_dict(), "image_size": [64, 64]}
    overrides = check_overrides({"betas": betas})
    if refused:
        with pytest.raises(ConfigError, match="betas differ from the checkpoint's"):
            check_resume_options(state, hp, overrides, batch_size=None, lr=None, image_size=64)
    else:
        check_resume_options(state, hp, overrides, batch_size=None, lr=None, image_size=64)


@pytest.mark.slow
def test_a_best_epoch_before_the_kill_still_gets_its_val_report(tmp_path: Path, tiny_yaml: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The killed run never reaches the end where val/ is written; the resumed run's epochs score lower, so it holds
    no evaluation of the best epoch either: val/ and the closing table must still describe best/."""
    import dataclasses
    import json

    real_validate = trainer_module.Trainer.validate
    faked_ap = iter([0.5, 0.1])  # epoch 1 is the best, epoch 2 (after the resume) is worse

    def validate(self):
        return dataclasses.replace(real_validate(self), AP=next(faked_ap))

    monkeypatch.setattr(trainer_module.Trainer, "validate", validate)
    real_end = trainer_module.Trainer._end_of_epoch

    def end_then_die(self, epoch, *rest, **kwargs):
        real_end(self, epoch, *rest, **kwargs)
        raise Killed

    args = dict(epochs=2, batch_size=4, output=tmp_path / "run", **TINY)
    with monkeypatch.context() as patch:
        patch.setattr(trainer_module.Trainer, "_end_of_epoch", end_then_die)
        with pytest.raises(Killed):
            dfine.train(tiny_yaml, **args)
    assert not (tmp_path / "run" / "val").exists()
    capsys.readouterr()

    dfine.train(tiny_yaml, resume=True, **args)
    out = capsys.readouterr().out
    assert "Validation of the best EMA weights (epoch 1):" in out
    assert "Precision-recall curves, confusion matrix and per-class AP of epoch 1" in out
    report = json.loads((tmp_path / "run" / "val" / "metrics.json").read_text())
    assert report["num_images"] == 4


def test_a_kill_while_best_is_written_repeats_the_epoch(tmp_path: Path, tiny_yaml: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """best/ and best_stage1.pt are written before last.pt: a kill between them must not leave a last.pt that says
    the epoch is done (a resume would skip it, and best/ would stay an epoch behind what last.pt records)."""
    from dfine.engine import checkpoint as ckpt

    def die(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(ckpt, "save_best_model", die)
    with pytest.raises(Killed):
        dfine.train(tiny_yaml, epochs=2, batch_size=4, output=tmp_path / "run", stop_epoch=1, **TINY)
    assert not (tmp_path / "run" / "last.pt").exists()
    assert torch.load(tmp_path / "run" / "best_stage1.pt", weights_only=True)["epoch"] == 0


def test_a_kill_while_the_metrics_are_logged_repeats_the_epoch(tmp_path: Path, tiny_yaml: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The epoch's metrics.jsonl record is written before last.pt, so a kill between them cannot lose the record:
    the resumed run repeats the epoch and logs it."""
    from dfine.engine.logger import MetricsLogger

    def die(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(MetricsLogger, "log_epoch", die)
    with pytest.raises(Killed):
        dfine.train(tiny_yaml, epochs=2, batch_size=4, output=tmp_path / "run", eval_interval=0, **TINY)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_checkpoint_moved_without_best_is_not_reported_as_the_best_epoch(trained_run, tmp_path: Path,
                                                                           tiny_yaml: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """last.pt copied alone: the best epoch's weights are not there to evaluate, and the final EMA that fills best/
    must not be shown as them."""
    run = tmp_path / "k"
    run.mkdir()
    shutil.copy(trained_run.last_checkpoint, run / "last.pt")
    dfine.train(tiny_yaml, epochs=2, batch_size=4, resume=run / "last.pt", **TINY)
    out = capsys.readouterr().out
    assert "Validation of the best EMA weights" not in out and not (run / "val").exists()


def test_resume_keeps_the_runs_evaluation_interval(tmp_path: Path, tiny_yaml: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`--resume` alone continues the run as it was: which epochs are evaluated decides best/, so the default
    interval does not replace the checkpoint's."""
    dfine.train(tiny_yaml, epochs=1, batch_size=4, output=tmp_path / "run", eval_interval=0, **TINY)
    capsys.readouterr()
    dfine.train(tiny_yaml, epochs=2, batch_size=4, output=tmp_path / "run", resume=True, **TINY)
    assert "eval_interval 0 kept from the checkpoint" in capsys.readouterr().out
    assert [("eval" in record) for record in read_metrics(tmp_path / "run")] == [False, False]


def test_resume_keeps_the_runs_mixed_precision(tmp_path: Path, tiny_yaml: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A run started with amp=True (False on CUDA, the usual cure for NaNs) resumes with it, not the device's
    default."""
    dfine.train(tiny_yaml, epochs=1, batch_size=4, output=tmp_path / "run", eval_interval=0, amp=True, **TINY)
    capsys.readouterr()
    dfine.train(tiny_yaml, epochs=2, batch_size=4, output=tmp_path / "run", resume=True, eval_interval=0, **TINY)
    out = capsys.readouterr().out
    assert "mixed precision on kept from the checkpoint" in out and "bfloat16 autocast" in out
