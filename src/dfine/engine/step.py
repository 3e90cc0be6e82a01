"""One optimizer step with mixed precision, gradient clipping and non-finite protection (the original's
``src/solver/det_engine.py: train_one_epoch``).

Order: forward under ``torch.autocast`` (the criterion itself runs in float32) → check the loss is finite on every
rank → backward (through the GradScaler when fp16) → ``unscale_`` → ``clip_grad_norm_`` → optimizer step →
scheduler step → EMA update.

A non-finite loss skips the whole step: no backward, so no NaN gradient can reach the weights, the optimizer
moments or the EMA, and the scheduler does not advance. Under DDP the decision is all-reduced first, so every rank
skips together (a rank skipping backward alone would hang the others in the gradient all-reduce). Without a
GradScaler a non-finite gradient norm (finite loss) also skips the step; with one, the scaler skips it as part of
normal fp16 loss scaling, which is not counted as a failure.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from dfine.engine.distributed import all_ranks_true, is_distributed, reduce_dict
from dfine.engine.ema import ModelEMA
from dfine.engine.optim import unwrap_model
from dfine.engine.profiling import PhaseTimer
from dfine.engine.schedule import LRSchedule

_NO_TIMER = PhaseTimer(enabled=False)


class StepOutcome(enum.Enum):
    STEPPED = "stepped"
    NONFINITE = "nonfinite"  # loss (or, without a scaler, gradient) not finite: nothing was updated
    SCALER_SKIPPED = "scaler_skipped"  # fp16 overflow: the GradScaler skipped this step and lowered its scale


@dataclass
class StepResult:
    outcome: StepOutcome
    loss: float  # the total loss averaged over ranks (NaN/inf when not finite)
    terms: dict[str, float]  # the weighted loss terms averaged over ranks (empty when not finite)
    batch_size: int


def move_batch(batch: Mapping[str, Any], device: torch.device) -> tuple[Tensor, list[dict[str, Any]]]:
    """``pixel_values`` and the targets' tensors on ``device``."""
    pixel_values = batch["pixel_values"].to(device, non_blocking=True)
    labels = [{k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in target.items()}
              for target in batch["labels"]]
    return pixel_values, labels


def _unused_parameter_guard(model: nn.Module, labels: list[dict[str, Any]]) -> Tensor | None:
    """A zero term touching the denoising embedding when no image of the batch has a box.

    Denoising queries are built from the ground-truth boxes; without any, the label embedding is unused, and DDP
    with ``find_unused_parameters=False`` (cheaper, the original's setting) would wait for its gradient forever.
    """
    if any(len(target["class_labels"]) for target in labels):
        return None
    embedding = getattr(getattr(unwrap_model(model), "model", None), "denoising_class_embed", None)
    return None if embedding is None else embedding.weight.sum() * 0.0


def train_step(
    model: nn.Module,
    batch: Mapping[str, Any],
    *,
    optimizer: Optimizer,
    scheduler: LRSchedule,
    scaler: torch.amp.GradScaler,
    ema: ModelEMA,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    clip_max_norm: float,
    timer: PhaseTimer | None = None,
) -> StepResult:
    """Run one training step on ``batch`` (see the module docstring).

    Args:
        model: the model to call (DDP-wrapped under torchrun); in train mode.
        batch: ``{"pixel_values": (B, 3, H, W), "labels": [targets]}`` from the collate function.
        optimizer, scheduler, scaler, ema: the training state, updated in place when the step is taken.
        device: where the model lives.
        amp_dtype: autocast dtype, or None for full precision.
        clip_max_norm: global gradient L2-norm limit; 0 disables clipping (the norm is still checked).
        timer: where ``dfine train --profile`` counts the phases (None: not profiling).
    """
    timer = timer or _NO_TIMER
    pixel_values, labels = move_batch(batch, device)
    with timer.phase("forward"), torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                                                enabled=amp_dtype is not None):
        outputs = model(pixel_values, labels=labels)
    loss = outputs.loss
    if is_distributed():
        guard = _unused_parameter_guard(model, labels)
        if guard is not None:
            loss = loss + guard
    batch_size = int(pixel_values.shape[0])
    if not all_ranks_true(torch.isfinite(loss.detach()).all()):
        optimizer.zero_grad(set_to_none=True)
        return StepResult(StepOutcome.NONFINITE, float(loss.detach().float().item()), {}, batch_size)

    with timer.phase("backward"):
        scaler.scale(loss).backward()
    with timer.phase("optimizer"):
        scaler.unscale_(optimizer)  # a no-op when the scaler is disabled
        params = [p for group in optimizer.param_groups for p in group["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip_max_norm if clip_max_norm > 0 else float("inf"))
        if scaler.is_enabled():
            scale = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            outcome = StepOutcome.STEPPED if scaler.get_scale() >= scale else StepOutcome.SCALER_SKIPPED
        elif not torch.isfinite(grad_norm):
            outcome = StepOutcome.NONFINITE
        else:
            optimizer.step()
            outcome = StepOutcome.STEPPED
        optimizer.zero_grad(set_to_none=True)
        if outcome is StepOutcome.STEPPED:
            scheduler.step()
    if outcome is StepOutcome.STEPPED:
        with timer.phase("EMA"):
            ema.update(model)
    terms = _averaged_terms({"loss": loss, **outputs.loss_dict})
    return StepResult(outcome, terms["loss"], terms, batch_size)


def _averaged_terms(values: Mapping[str, Tensor]) -> dict[str, float]:
    """Rank-averaged scalars with one collective and one host sync (not one per term: there are ~40)."""
    reduced = reduce_dict(values)
    names = sorted(reduced)
    return dict(zip(names, torch.stack([reduced[name].reshape(()).float() for name in names]).tolist()))
