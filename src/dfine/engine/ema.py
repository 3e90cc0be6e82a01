"""Exponential moving average of the model weights (the original's ``src/optim/ema.py: ModelEMA``).

After every optimizer step, every floating-point entry of the model's state dict (parameters *and* batch-norm
running statistics) moves towards the trained model::

    ema ← d(t) · ema + (1 − d(t)) · model,   d(t) = decay · (1 − exp(−t / warmups)),   t = updates so far

so the average follows the model closely early on (``d ≈ 0``) and averages over ``~1/(1 − decay)`` steps later.
``warmups=0`` means a constant ``d = decay``. Integer buffers (``num_batches_tracked``) are copied. Evaluation and the
"best" model always use the EMA weights.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from dfine.engine.optim import unwrap_model


class ModelEMA:
    """An EMA copy of a model.

    Args:
        model: the model being trained (a DDP wrapper is unwrapped); it is deep-copied once.
        decay: the long-run decay.
        warmups: the warm-up constant in updates (0 = no warm-up).

    Attributes:
        module: the averaged model, in eval mode, without gradients.
        updates: number of :meth:`update` calls so far (``t``).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmups: int = 1000) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        if warmups < 0:
            raise ValueError(f"EMA warmups must be >= 0, got {warmups}")
        self.module = copy.deepcopy(unwrap_model(model)).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)
        self.decay = float(decay)
        self.warmups = int(warmups)
        self.updates = 0

    def decay_at(self, updates: int) -> float:
        """``d(t)`` for ``t = updates``."""
        if self.warmups == 0:
            return self.decay
        return self.decay * (1.0 - math.exp(-updates / self.warmups))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards ``model`` (call after each optimizer step)."""
        self.updates += 1
        d = self.decay_at(self.updates)
        current = unwrap_model(model).state_dict()
        averages, values = [], []
        for name, average in self.module.state_dict().items():
            value = current[name].detach()
            if average.dtype.is_floating_point:
                averages.append(average)
                values.append(value.to(average.dtype))
            else:
                average.copy_(value)
        # lerp(average, value, w) = average + w·(value − average) = d·average + (1 − d)·value, fused over tensors
        if averages:
            torch._foreach_lerp_(averages, values, 1.0 - d)

    def restart(self, decay: float) -> None:
        """Continue with a new long-run ``decay`` (the stop epoch's ``ema_restart_decay``).

        The averaged weights and the update counter are kept, so no new warm-up starts: the original only changes
        the decay at the stop epoch, after reloading the best stage-1 state.
        """
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)

    def state_dict(self) -> dict[str, Any]:
        """``{"module": weights, "updates": t, "decay": d, "warmups": w}``; ``module`` under that key makes a
        training checkpoint loadable by ``from_pretrained`` (which prefers ``ema/module``)."""
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay,
                "warmups": self.warmups}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
        self.decay = float(state.get("decay", self.decay))
        self.warmups = int(state.get("warmups", self.warmups))
