"""ModelEMA: the decay ramp, what is averaged, restart and state round trip."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dfine.engine.ema import ModelEMA


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_decay_ramp() -> None:
    ema = ModelEMA(_net(), decay=0.9999, warmups=1000)
    assert ema.decay_at(0) == 0.0
    assert ema.decay_at(1000) == pytest.approx(0.9999 * (1 - math.exp(-1)))
    assert ema.decay_at(100_000) == pytest.approx(0.9999)
    assert ModelEMA(_net(), decay=0.99, warmups=0).decay_at(1) == 0.99


def test_update_averages_parameters_and_buffers() -> None:
    model = _net()
    ema = ModelEMA(model, decay=0.5, warmups=0)
    start = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.add_(2.0)
        model[1].num_batches_tracked.add_(7)
    ema.update(model)
    averaged = ema.module.state_dict()
    for name, value in model.state_dict().items():
        if value.dtype.is_floating_point:
            torch.testing.assert_close(averaged[name], 0.5 * start[name] + 0.5 * value)
        else:
            assert torch.equal(averaged[name], value)
    assert ema.updates == 1
    assert not any(p.requires_grad for p in ema.module.parameters())
    assert not ema.module.training


def test_first_update_with_warmup_copies_the_model() -> None:
    model = _net()
    ema = ModelEMA(model, decay=0.9999, warmups=1000)
    with torch.no_grad():
        model[0].weight.mul_(3)
    ema.update(model)  # d(1) = 0.9999 * (1 - e^-0.001) ~ 1e-3
    d = ema.decay_at(1)
    torch.testing.assert_close(ema.module[0].weight, model[0].weight * (1 - d) + model[0].weight / 3 * d)


def test_restart_and_state_dict() -> None:
    model = _net()
    ema = ModelEMA(model, decay=0.9, warmups=10)
    for _ in range(3):
        ema.update(model)
    ema.restart(0.5)
    assert (ema.decay, ema.updates) == (0.5, 3)
    state = ema.state_dict()
    other = ModelEMA(_net(), decay=0.1, warmups=1)
    other.load_state_dict(state)
    assert (other.decay, other.warmups, other.updates) == (0.5, 10, 3)
    for a, b in zip(other.module.state_dict().values(), ema.module.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError):
        ema.restart(1.0)


def test_ddp_like_wrapper_is_unwrapped() -> None:
    model = _net()
    ema = ModelEMA(nn.DataParallel(model), decay=0.0, warmups=0)
    assert isinstance(ema.module, nn.Sequential)
    ema.update(nn.DataParallel(model))
