"""The progress a training run carries between epochs and in its checkpoints, and the divergence signal."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class TrainState:
    """Progress that a checkpoint carries besides the module/optimizer states."""

    start_epoch: int = 0  # the next epoch to run
    stage: int = 1
    best_metric: float = -1.0
    best_epoch: int = -1
    best_eval: dict[str, Any] | None = None
    rollbacks: int = 0
    lr_scale: float = 1.0  # product of the divergence back-offs applied so far
    stale_evals: int = 0  # evaluations in a row without a better AP, in this stage (early stopping)


class Diverged(Exception):
    """Raised by an epoch that met too many non-finite steps in a row; the loop rolls back."""

    def __init__(self, epoch: int, iteration: int) -> None:
        self.epoch, self.iteration = epoch, iteration


def clone_state(value: Any) -> Any:
    """A deep copy of a (nested) state dict with tensors cloned to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return type(value)((k, clone_state(v)) for k, v in value.items())
    if isinstance(value, list):
        return [clone_state(v) for v in value]
    return copy.deepcopy(value)
