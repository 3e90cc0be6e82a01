"""Learning-rate schedules, per optimizer step: a linear warm-up, then one of a few shapes.

======================  =================================================================================
``lr_schedule``         after the warm-up
======================  =================================================================================
``constant``            the base LR to the end: what the original D-FINE recipe does (its ``MultiStepLR``
                        milestone, at epoch 500, is never reached; ``configs/dfine/include/optimizer.yml``)
``flat-cosine``         the base LR until ``lr_flat_epochs``, then a half cosine down to
                        ``lr_min_ratio`` x the base LR at the stop epoch, held there for the epochs without
                        strong augmentation (DEIM, Huang et al. CVPR 2025: ``FlatCosineLRScheduler``)
``cosine``              a half cosine from the base LR to ``lr_min_ratio`` x it over the rest of the run
``linear``              a straight line from the base LR to ``lr_min_ratio`` x it over the rest of the run
======================  =================================================================================

One class, :class:`LRSchedule`, computes every shape from plain numbers, so its state dict holds numbers only
(checkpoints load with ``torch.load(weights_only=True)``) and a resumed run continues the same curve. The training
loop only calls :meth:`~LRSchedule.step` and, after a divergence, :meth:`~LRSchedule.scale_base_lrs`.
"""

from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

LR_SCHEDULES = ("constant", "flat-cosine", "cosine", "linear")


class LRSchedule(LRScheduler):
    """Linear warm-up to each group's base LR, then the shape ``kind`` (see the module docstring).

    The LR of optimizer step ``t`` (0-based) is ``base_lr · factor(t)``. Call :meth:`step` after every optimizer step.

    Args:
        optimizer: the optimizer whose groups' ``lr`` are the base LRs.
        kind: one of :data:`LR_SCHEDULES`.
        warmup_iters: warm-up length in optimizer steps (0: the shape from the first step).
        total_iters: optimizer steps of the whole run (the decays end there).
        flat_iters: ``flat-cosine``: the step the decay starts at (never before the warm-up ends).
        decay_end_iters: ``flat-cosine``: the step the decay reaches its floor (the stop epoch); default the end.
        min_ratio: the floor of the decaying shapes, as a fraction of the base LR.
    """

    def __init__(self, optimizer: Optimizer, kind: str = "constant", *, warmup_iters: int = 0, total_iters: int = 1,
                 flat_iters: int = 0, decay_end_iters: int | None = None, min_ratio: float = 0.0) -> None:
        if kind not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {kind!r}; known: {', '.join(LR_SCHEDULES)}")
        if warmup_iters < 0:
            raise ValueError(f"warmup_iters must be >= 0, got {warmup_iters}")
        self.kind = kind
        self.warmup_iters = int(warmup_iters)
        self.total_iters = max(1, int(total_iters))
        self.flat_iters = int(flat_iters)
        self.decay_end_iters = self.total_iters if decay_end_iters is None else int(decay_end_iters)
        self.min_ratio = float(min_ratio)
        super().__init__(optimizer)

    def _shape(self, step: int) -> float:
        """The factor after the warm-up, 1 at the start of the decay, ``min_ratio`` at its end."""
        if self.kind == "constant":
            return 1.0
        start = max(self.warmup_iters, self.flat_iters if self.kind == "flat-cosine" else 0)
        # the floor is reached at the stop step (flat-cosine) or at the run's last step (the others)
        end = self.decay_end_iters if self.kind == "flat-cosine" else self.total_iters - 1
        if step <= start or end <= start:  # before the decay, or a run too short to have one
            return 1.0
        progress = min(1.0, (step - start) / (end - start))
        if self.kind == "linear":
            fall = progress
        else:  # cosine and flat-cosine: half a cosine period
            fall = 0.5 * (1.0 - math.cos(math.pi * progress))
        return 1.0 - (1.0 - self.min_ratio) * fall

    def factor(self, step: int) -> float:
        """LR multiplier at optimizer step ``step`` (0-based)."""
        warm = 1.0 if self.warmup_iters == 0 else min(1.0, (step + 1) / self.warmup_iters)
        return warm * self._shape(step)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]

    def scale_base_lrs(self, multiplier: float) -> None:
        """Multiply every group's base LR (and its current LR) by ``multiplier`` (used to back off after a
        divergence)."""
        self.base_lrs = [base * multiplier for base in self.base_lrs]
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["initial_lr"] = base
            group["lr"] = base * self.factor(self.last_epoch)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers only, so checkpoints load with ``torch.load(weights_only=True)``."""
        return {"kind": self.kind, "warmup_iters": self.warmup_iters, "total_iters": self.total_iters,
                "flat_iters": self.flat_iters, "decay_end_iters": self.decay_end_iters, "min_ratio": self.min_ratio,
                "last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs), "_step_count": self._step_count,
                "_last_lr": list(self._last_lr)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # checkpoints written before schedules had names hold the warm-up only: that was the constant schedule
        self.kind = str(state_dict.get("kind", "constant"))
        self.warmup_iters = int(state_dict["warmup_iters"])
        self.total_iters = int(state_dict.get("total_iters", self.total_iters))
        self.flat_iters = int(state_dict.get("flat_iters", 0))
        self.decay_end_iters = int(state_dict.get("decay_end_iters", self.total_iters))
        self.min_ratio = float(state_dict.get("min_ratio", 0.0))
        self.last_epoch = int(state_dict["last_epoch"])
        self.base_lrs = [float(v) for v in state_dict["base_lrs"]]
        self._step_count = int(state_dict.get("_step_count", self.last_epoch + 1))
        self._last_lr = [float(v) for v in state_dict["_last_lr"]]
        for group, lr, base in zip(self.optimizer.param_groups, self._last_lr, self.base_lrs):
            group["lr"] = lr
            group["initial_lr"] = base


def build_lr_schedule(optimizer: Optimizer, hparams: Any, steps_per_epoch: int) -> LRSchedule:
    """The schedule ``hparams`` (a :class:`~dfine.engine.hparams.Hyperparameters`) asks for, in optimizer steps."""
    total = hparams.epochs * steps_per_epoch
    stop = min(hparams.stop_epoch, hparams.epochs) * steps_per_epoch
    flat = hparams.lr_flat_epochs * steps_per_epoch if hparams.lr_flat_epochs is not None else stop // 2
    return LRSchedule(optimizer, hparams.lr_schedule, warmup_iters=hparams.warmup_iters, total_iters=total,
                      flat_iters=flat, decay_end_iters=stop if stop > flat else total, min_ratio=hparams.lr_min_ratio)


def describe_schedule(hparams: Any) -> str:
    """The schedule as the start-of-run table prints it."""
    warm = f"linear warm-up over {hparams.warmup_iters} iteration{'' if hparams.warmup_iters == 1 else 's'}"
    floor = f"{hparams.lr_min_ratio:g} x the base LR"
    if hparams.lr_schedule == "constant":
        return f"{warm}, then constant"
    if hparams.lr_schedule == "flat-cosine":
        flat = (f"epoch {hparams.lr_flat_epochs}" if hparams.lr_flat_epochs is not None
                else "half the stage-1 epochs")
        return f"{warm}, flat until {flat}, cosine down to {floor} at the stop epoch"
    return f"{warm}, then {hparams.lr_schedule} down to {floor} at the end"
