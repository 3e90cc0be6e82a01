"""The LR schedules: warm-up, the four shapes, their state round trip and the divergence back-off."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dfine.engine.hparams import resolve_hyperparameters
from dfine.engine.schedule import LR_SCHEDULES, LRSchedule, build_lr_schedule
from dfine.errors import ConfigError


def _lrs(schedule: LRSchedule, steps: int) -> list[float]:
    seen = []
    for _ in range(steps):
        seen.append(schedule.optimizer.param_groups[0]["lr"])
        schedule.optimizer.step()
        schedule.step()
    return seen


def _optimizer(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=lr)


def test_warmup_then_constant_and_state_round_trip() -> None:
    schedule = LRSchedule(_optimizer(), "constant", warmup_iters=4, total_iters=7)
    assert _lrs(schedule, 7) == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0])
    state = schedule.state_dict()
    assert all(isinstance(v, (int, float, list, str)) for v in state.values())
    other = LRSchedule(_optimizer(), "cosine", warmup_iters=1, total_iters=3)
    other.load_state_dict(state)
    assert other.kind == "constant"
    assert other.optimizer.param_groups[0]["lr"] == schedule.optimizer.param_groups[0]["lr"]
    assert other.last_epoch == schedule.last_epoch
    assert LRSchedule(_optimizer(0.5), warmup_iters=0).optimizer.param_groups[0]["lr"] == 0.5


def test_a_checkpoint_written_before_named_schedules_resumes_as_constant() -> None:
    old = {"warmup_iters": 2, "last_epoch": 5, "base_lrs": [1.0], "_step_count": 6, "_last_lr": [1.0]}
    schedule = LRSchedule(_optimizer(), "cosine", warmup_iters=0, total_iters=10)
    schedule.load_state_dict(old)
    assert schedule.kind == "constant" and schedule.factor(9) == 1.0


def test_cosine_and_linear_end_at_the_floor() -> None:
    cosine = LRSchedule(_optimizer(), "cosine", warmup_iters=0, total_iters=11, min_ratio=0.1)
    seen = _lrs(cosine, 11)
    assert seen[0] == pytest.approx(1.0)
    assert seen[5] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert seen[10] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(seen, seen[1:]))
    linear = LRSchedule(_optimizer(), "linear", warmup_iters=0, total_iters=11, min_ratio=0.0)
    assert _lrs(linear, 11) == pytest.approx([1 - i / 10 for i in range(11)])


def test_flat_cosine_holds_then_decays_to_the_stop_step_and_stays() -> None:
    schedule = LRSchedule(_optimizer(), "flat-cosine", warmup_iters=2, total_iters=20, flat_iters=6,
                          decay_end_iters=14, min_ratio=0.5)
    seen = _lrs(schedule, 20)
    assert seen[:2] == pytest.approx([0.5, 1.0])  # warm-up
    assert seen[2:7] == pytest.approx([1.0] * 5)  # flat
    assert seen[10] == pytest.approx(0.5 + 0.5 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert seen[14:] == pytest.approx([0.5] * 6)  # the epochs without strong augmentation


def test_halving_base_lrs_mid_warmup() -> None:
    optimizer = _optimizer()
    schedule = LRSchedule(optimizer, "constant", warmup_iters=2, total_iters=10)
    schedule.scale_base_lrs(0.5)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.25)
    optimizer.step()
    schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)


@pytest.mark.parametrize("kind", LR_SCHEDULES)
def test_built_from_the_hyperparameters(kind: str) -> None:
    hp = resolve_hyperparameters("n", num_train_images=64, batch_size=4, epochs=10, lr=1e-3,
                                 overrides={"lr_schedule": kind, "lr_min_ratio": 0.25, "stop_epoch": 8,
                                            "warmup_iters": 0})
    schedule = build_lr_schedule(_optimizer(1e-3), hp, steps_per_epoch=16)
    assert schedule.kind == kind and schedule.total_iters == 160
    last = schedule.factor(159)
    assert last == pytest.approx(1.0 if kind == "constant" else 0.25, abs=1e-3)
    assert "LR schedule" in hp.summary()


def test_unknown_schedule_is_a_one_line_error() -> None:
    with pytest.raises(ConfigError, match="lr_schedule must be one of constant, flat-cosine, cosine, linear"):
        resolve_hyperparameters("n", num_train_images=64, batch_size=4, overrides={"lr_schedule": "step"})
