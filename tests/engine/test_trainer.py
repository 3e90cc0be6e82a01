"""The training loop's safety nets: non-finite losses, rollbacks, empty images and batches, the stop epoch."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from torch import nn
from trainhelpers import TINY, drop_annotations, tiny_data

import dfine
import dfine.loss
from dfine.engine import trainer as trainer_module
from dfine.engine.evaluator import EvalResult
from dfine.engine.logger import read_metrics
from dfine.errors import ConfigError, DFineError


class NaNAfter(nn.Module):
    """Wraps the real criterion; calls whose 1-based number is in ``nan_calls`` return NaN terms (still in the
    autograd graph, as a real overflow would be)."""

    def __init__(self, criterion: nn.Module, nan_calls) -> None:
        super().__init__()
        self.criterion = criterion
        self.nan_calls = nan_calls
        self.calls = 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        losses = self.criterion(*args, **kwargs)
        if self.calls in self.nan_calls:
            return {name: value * float("nan") for name, value in losses.items()}
        return losses


def _inject_nans(monkeypatch: pytest.MonkeyPatch, nan_calls) -> list[NaNAfter]:
    made: list[NaNAfter] = []
    real = dfine.loss.build_criterion

    def build(config):
        made.append(NaNAfter(real(config), nan_calls))
        return made[-1]

    monkeypatch.setattr(dfine.loss, "build_criterion", build)
    return made


def _all_finite(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.dtype.is_floating_point)


def test_nan_loss_skips_the_step(tmp_path: Path, tiny_yaml: Path, monkeypatch: pytest.MonkeyPatch,
                                 caplog: pytest.LogCaptureFixture) -> None:
    _inject_nans(monkeypatch, {2, 3})
    with caplog.at_level(logging.WARNING, logger="dfine"):
        result = dfine.train(tiny_yaml, epochs=1, batch_size=2, output=tmp_path / "run", eval_interval=0, **TINY)
    data = torch.load(result.last_checkpoint, weights_only=True)
    assert data["ema"]["updates"] == 2 and data["scheduler"]["last_epoch"] == 2  # 4 batches, 2 skipped
    assert _all_finite(data["model"]) and _all_finite(data["ema"]["module"])
    assert read_metrics(result.output_dir)[0]["train"]["skipped_steps"] == 2
    assert sum("step skipped" in r.getMessage() for r in caplog.records) == 2
    assert not any("rolled back" in r.getMessage() for r in caplog.records)


def test_repeated_nans_roll_back_halve_the_lr_and_recover(tmp_path: Path, tiny_yaml: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    _inject_nans(monkeypatch, {1, 2, 3, 4, 5})  # five in a row at the very start, then healthy
    with caplog.at_level(logging.WARNING, logger="dfine"):
        result = dfine.train(tiny_yaml, epochs=1, batch_size=1, output=tmp_path / "run", eval_interval=0, **TINY)
    rollbacks = [r.getMessage() for r in caplog.records if "rolled back" in r.getMessage()]
    assert len(rollbacks) == 1
    assert "rolled back to the start of the run and halved the learning rate" in rollbacks[0]
    data = torch.load(result.last_checkpoint, weights_only=True)
    assert data["extra"]["rollbacks"] == 1 and data["extra"]["lr_scale"] == 0.5
    hp = data["hparams"]
    assert data["scheduler"]["base_lrs"][-1] == pytest.approx(hp["lr"] / 2)
    assert data["ema"]["updates"] == 8 and _all_finite(data["model"])  # the retried epoch ran all 8 steps


def test_a_learning_rate_back_off_survives_the_stop_epoch_restart(tmp_path: Path, tiny_yaml: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # best_stage1.pt is written after epoch 1; epoch 2 diverges and halves the LR; the stop epoch (3) restores the
    # epoch-1 state, whose scheduler has the full LR: the halving must stay
    aps = iter([0.5, 0.1, 0.1])
    monkeypatch.setattr(trainer_module.Trainer, "validate", lambda self: EvalResult(*([next(aps)] * 14)))
    _inject_nans(monkeypatch, {9, 10, 11, 12, 13})  # batch size 1: 8 steps an epoch, the first 5 of epoch 2
    result = dfine.train(tiny_yaml, epochs=3, batch_size=1, output=tmp_path / "run", stop_epoch=2, **TINY)
    stage1 = torch.load(result.output_dir / "best_stage1.pt", weights_only=True)
    last = torch.load(result.last_checkpoint, weights_only=True)
    assert stage1["epoch"] == 0 and stage1["extra"]["lr_scale"] == 1.0
    assert last["stage"] == 2 and last["extra"]["rollbacks"] == 1 and last["extra"]["lr_scale"] == 0.5
    assert last["scheduler"]["base_lrs"][-1] == pytest.approx(last["hparams"]["lr"] / 2)
    assert last["optimizer"]["param_groups"][-1]["lr"] == pytest.approx(last["hparams"]["lr"] / 2)


def test_persistent_nans_stop_with_a_clear_error(tmp_path: Path, tiny_yaml: Path, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    _inject_nans(monkeypatch, range(1, 10_000))
    with caplog.at_level(logging.WARNING, logger="dfine"), pytest.raises(DFineError) as info:
        dfine.train(tiny_yaml, epochs=1, batch_size=1, output=tmp_path / "run", eval_interval=0, **TINY)
    message = str(info.value)
    assert "training diverged" in message and "after 2 rollbacks" in message and "\n" not in message
    assert sum("rolled back" in r.getMessage() for r in caplog.records) == 2


def test_images_and_batches_without_boxes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tiny_data(tmp_path / "data", num_train=4, num_val=2)
    drop_annotations(data, "train", keep_images={0})  # three of four training images have no box
    drop_annotations(data, "val", keep_images={0})
    with caplog.at_level(logging.INFO):
        # batch size 1: most batches have no box at all; stop_epoch=0 and no evaluation: the stop epoch has no
        # best stage-1 state to return to, which must not crash (the original does: its issues #74, #75)
        result = dfine.train(data, epochs=2, batch_size=1, output=tmp_path / "run", eval_interval=0, stop_epoch=0,
                             **TINY)
    history = read_metrics(result.output_dir)
    assert [h["train"]["skipped_steps"] for h in history] == [0, 0]
    assert all(torch.isfinite(torch.tensor(h["train"]["loss"])) for h in history)
    assert (result.best_model / "model.safetensors").exists()  # the final EMA, as nothing was evaluated
    assert not (result.output_dir / "best_stage1.pt").exists()
    metrics = dfine.val(result.best_model, data, batch_size=2, workers=0)
    assert 0.0 <= metrics.AP <= 1.0 and metrics.num_images == 2


def test_stop_epoch_without_best_is_announced(tmp_path: Path, tiny_yaml: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    dfine.train(tiny_yaml, epochs=2, batch_size=4, output=tmp_path / "run", eval_interval=0, stop_epoch=1, **TINY)
    out = capsys.readouterr().out
    assert "Stop epoch 2" in out and "no best stage-1 state exists" in out
    assert "Training hyper-parameters" in out and "Data set OK" in out


def test_tied_ap_keeps_the_latest_epoch(tmp_path: Path, tiny_yaml: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    # AP flat at 0, as early in most small runs: the stop epoch must restart from the latest stage-1 epoch, not
    # from epoch 1 with every epoch since thrown away
    monkeypatch.setattr(trainer_module.Trainer, "validate", lambda self: EvalResult(*([0.0] * 14)))
    result = dfine.train(tiny_yaml, epochs=3, batch_size=8, output=tmp_path / "run", stop_epoch=2, **TINY)
    out = capsys.readouterr().out
    assert "Stop epoch 3: strong augmentation and multi-scale off; restarting from the best stage-1 state (epoch 2, " \
           "AP 0.0%)" in out
    assert "epoch 3/3: loss" in out and "(best 0.0% @ epoch 3)" in out
    assert torch.load(result.output_dir / "best_stage1.pt", weights_only=True)["epoch"] == 1
    last = torch.load(result.last_checkpoint, weights_only=True)
    assert last["best_epoch"] == 2
    # best/ and the checkpoint agree: best/ holds the final epoch's EMA weights
    from safetensors.torch import load_file

    best = load_file(result.best_model / "model.safetensors")
    ema = last["ema"]["module"]
    shared = [k for k in best if k in ema and best[k].dtype.is_floating_point]
    assert len(shared) > 100
    assert all(torch.equal(best[k], ema[k]) for k in shared)


def test_stop_epoch_zero_says_the_run_has_no_strong_augmentation(tmp_path: Path, tiny_yaml: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    dfine.train(tiny_yaml, epochs=1, batch_size=4, output=tmp_path / "run", eval_interval=0, stop_epoch=0, **TINY)
    out = capsys.readouterr().out
    assert "No strong augmentation or multi-scale in this run" in out and "Stop epoch" not in out


def test_existing_run_is_not_overwritten(trained_run, tiny_yaml: Path) -> None:
    with pytest.raises(DFineError, match="already holds a training run"):
        dfine.train(tiny_yaml, epochs=1, batch_size=4, output=trained_run.output_dir, **TINY)


def test_bad_options_are_one_line_errors(tmp_path: Path, tiny_yaml: Path) -> None:
    with pytest.raises(DFineError, match="unknown option"):
        dfine.train(tiny_yaml, epochs=1, batch_size=4, output=tmp_path / "a", not_an_option=3, **TINY)
    with pytest.raises(DFineError, match="fewer than the model's 300 queries"):
        dfine.train(tiny_yaml, epochs=1, batch_size=4, output=tmp_path / "b",
                    **{**TINY, "num_queries": 300})
    with pytest.raises(DFineError, match="larger than the 8 training images"):
        dfine.train(tiny_yaml, epochs=1, batch_size=16, output=tmp_path / "c", **TINY)


def test_a_batch_preview_that_cannot_be_drawn_does_not_stop_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """train_batch0.jpg is a convenience: a drawing failure is a warning, and no partial file is left."""
    import dfine.imaging.draw

    def broken(*args, **kwargs):
        raise ValueError("no font")

    monkeypatch.setattr(dfine.imaging.draw, "draw_batch", broken)
    trainer = object.__new__(trainer_module.Trainer)  # only the two fields the preview reads
    trainer.output_dir, trainer.class_names = tmp_path, ["circle"]
    batch = {"pixel_values": torch.rand(1, 3, 32, 32),
             "labels": [{"class_labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]}
    with caplog.at_level(logging.WARNING, logger="dfine"):
        trainer._save_batch_preview(batch)
    assert "could not draw train_batch0.jpg: no font" in caplog.text
    assert not list(tmp_path.iterdir())
    monkeypatch.undo()
    trainer._save_batch_preview(batch)
    assert [p.name for p in tmp_path.iterdir()] == ["train_batch0.jpg"]


def _scripted_ap(monkeypatch: pytest.MonkeyPatch, values: list[float]) -> list[float]:
    """Validation returns these APs in turn; returns the list of those already given."""
    given: list[float] = []

    def validate(self):
        given.append(values[len(given)])
        return EvalResult(*([given[-1]] * 14))

    monkeypatch.setattr(trainer_module.Trainer, "validate", validate)
    return given


def test_patience_ends_stage_1_early_and_stage_2_follows(tmp_path: Path, tiny_yaml: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    given = _scripted_ap(monkeypatch, [0.5, 0.4, 0.5, 0.2, 0.1, 0.0])  # a tie is no gain either
    result = dfine.train(tiny_yaml, epochs=8, batch_size=8, output=tmp_path / "run", stop_epoch=6, patience=2,
                         **TINY)
    out = capsys.readouterr().out
    assert "early stopping" in out and "after 2 evaluations without a better AP" in out
    assert "No better AP in 2 evaluations (patience 2): stage 1 ends after epoch 3; stage 2 runs epochs 7..8" in out
    # the tie at epoch 3 is the best (the latest of equals) without resetting the patience
    assert ("Stop epoch 7: strong augmentation and multi-scale off; restarting from the best stage-1 state "
            "(epoch 3") in out
    assert "epoch 4/8" not in out and "epoch 7/8" in out and "epoch 8/8" in out
    assert len(given) == 5  # epochs 1-3, then 7 and 8
    last = torch.load(result.last_checkpoint, weights_only=True)
    assert last["epoch"] == 7 and last["stage"] == 2 and last["best_epoch"] == 2
    assert last["extra"]["stale_evals"] == 2  # stage 2 counted from zero: two evaluations without a gain


def test_patience_without_stage_2_stops_and_a_resume_stays_stopped(tmp_path: Path, tiny_yaml: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    given = _scripted_ap(monkeypatch, [0.3, 0.3, 0.3, 0.9])
    result = dfine.train(tiny_yaml, epochs=6, batch_size=8, output=tmp_path / "run", stop_epoch=6, patience=2,
                         **TINY)
    assert "No better AP in 2 evaluations (patience 2): stopping after epoch 3 of 6" in capsys.readouterr().out
    assert len(given) == 3 and torch.load(result.last_checkpoint, weights_only=True)["epoch"] == 2
    again = dfine.train(tiny_yaml, output=tmp_path / "run", resume=True, **TINY)
    assert len(given) == 3  # the resumed run makes the same decision: nothing more is trained
    assert "stopping after epoch 3 of 6" in capsys.readouterr().out
    assert torch.load(again.last_checkpoint, weights_only=True)["epoch"] == 2


def test_patience_may_change_on_resume(tmp_path: Path, tiny_yaml: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A run that levelled off resumes with more patience and trains on; a run saved before the option existed
    accepts it."""
    given = _scripted_ap(monkeypatch, [0.3, 0.3, 0.3, 0.3, 0.3, 0.3])
    run = tmp_path / "run"
    dfine.train(tiny_yaml, epochs=6, batch_size=8, output=run, stop_epoch=6, patience=2, **TINY)
    assert len(given) == 3
    again = dfine.train(tiny_yaml, output=run, resume=True, patience=3, **TINY)
    out = capsys.readouterr().out
    assert "patience changed from 2 to 3 on resume" in out
    assert len(given) == 4 and "stopping after epoch 4 of 6" in out  # one more evaluation, then out of patience
    last = torch.load(again.last_checkpoint, weights_only=True)
    assert last["epoch"] == 3 and last["hparams"]["patience"] == 3  # kept for the next resume
    # a checkpoint from before patience existed: no such key in its options
    del last["hparams"]["patience"]
    torch.save(last, again.last_checkpoint)
    dfine.train(tiny_yaml, output=run, resume=True, patience=0, **TINY)
    assert len(given) == 6  # patience 0 is off: the run trains to its end


def test_patience_must_not_be_negative(tmp_path: Path, tiny_yaml: Path) -> None:
    with pytest.raises(ConfigError, match="patience must be >= 0"):
        dfine.train(tiny_yaml, epochs=2, batch_size=8, output=tmp_path / "run", patience=-1, **TINY)


def test_a_resume_refuses_a_negative_patience_too() -> None:
    from dfine.engine.hparams import resolve_hyperparameters
    from dfine.engine.resuming import apply_resume_changes

    hp = resolve_hyperparameters("n", num_train_images=10)
    with pytest.raises(ConfigError, match="patience must be >= 0"):
        apply_resume_changes(hp, {"patience": -1})  # else the run would stop at its first evaluation
    assert hp.patience == 0


def test_patience_without_evaluations_says_it_does_nothing(tmp_path: Path, tiny_yaml: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dfine"):
        dfine.train(tiny_yaml, epochs=1, batch_size=8, output=tmp_path / "run", eval_interval=0, patience=3, **TINY)
    assert "patience=3 has nothing to count without evaluations (eval_interval 0): the run trains for 1 epoch" in (
        caplog.text)


def test_a_segmentation_run_keeps_the_epoch_of_the_best_mask_ap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    data = tiny_data(tmp_path / "data", num_train=4, num_val=2, masks=True)
    # box AP falls while mask AP rises: the masks decide
    scores = iter([(0.5, 0.1), (0.2, 0.3)])

    def validate(self):
        box, mask = next(scores)
        result = EvalResult(*([box] * 14))
        result.segm = EvalResult(*([mask] * 14), iou_type="segm")
        return result

    monkeypatch.setattr(trainer_module.Trainer, "validate", validate)
    result = dfine.train(data, epochs=2, batch_size=4, output=tmp_path / "run", stop_epoch=0, task="segment", **TINY)
    assert torch.load(result.last_checkpoint, weights_only=True)["best_epoch"] == 1
    assert result.metrics["segm"]["AP"] == pytest.approx(0.3) and result.metrics["AP"] == pytest.approx(0.2)
    assert "mask AP 30.0% (best mask 30.0% @ epoch 2)" in capsys.readouterr().out


def test_a_segmentation_runs_val_report_holds_the_masks(tmp_path: Path) -> None:
    data = tiny_data(tmp_path / "data", num_train=2, num_val=2, masks=True)
    result = dfine.train(data, epochs=1, batch_size=2, output=tmp_path / "run", task="segment", **TINY)
    records = json.loads((result.output_dir / "val" / "predictions.json").read_text())
    assert len(records) == 2 * 100 and all(r["segmentation"]["size"] == [160, 160] for r in records)
