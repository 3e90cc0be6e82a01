"""The competitor of our training engine: transformers' D-FINE in a plain AdamW loop, on the same data.

This is what a user of Hugging Face transformers writes to fine-tune D-FINE: ``DFineForObjectDetection`` with a
constant-LR AdamW, no warm-up, no EMA, no schedule, horizontal flips as the only augmentation, images loaded in the
main process (no workers), and no evaluation while training. It is used by ``benchmarks/train_quality.py`` (AP per
epoch budget) and ``benchmarks/train_throughput.py`` (wall-clock time), so that both compare against one loop.

Both sides see the same pixels: images are read and resized by dfine's own data pipeline (``EvalTransforms``, the
image processor's PIL bilinear resize), and both are scored by dfine's COCO evaluator, so only the model code and the
training loop differ. transformers is a benchmark-only dependency (``pip install transformers``).
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dfine.data import BatchCollator, EvalTransforms, build_dataloader, resolve_dataset
from dfine.engine.validate import evaluate


def transformers_model(source: torch.nn.Module) -> torch.nn.Module:
    """transformers' ``DFineForObjectDetection`` with exactly the config and weights of our model ``source``.

    Ours writes a Hugging Face folder that transformers reads; a load that is not exact is an error, since the
    comparison means nothing with other weights.
    """
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as folder:
        source.save_pretrained(folder)
        model, info = transformers.DFineForObjectDetection.from_pretrained(folder, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        raise RuntimeError(f"transformers did not load our weights exactly: {problems}")
    return model.train()


@dataclass
class LoopResult:
    """What one plain-loop run measured."""

    lr: float
    epoch_seconds: list[float] = field(default_factory=list)  # training time of each epoch (no evaluation)
    ap: dict[int, dict[str, float]] = field(default_factory=dict)  # epoch (1-based) -> {"AP", "AP50"}
    images_per_epoch: int = 0

    @property
    def images_per_second(self) -> float:
        total = sum(self.epoch_seconds)
        return self.images_per_epoch * len(self.epoch_seconds) / total if total else float("nan")


def _flip(pixels: torch.Tensor, target: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
    boxes = target["boxes"].clone()
    boxes[:, 0] = 1.0 - boxes[:, 0]  # normalised cx
    return pixels.flip(-1), {**target, "boxes": boxes}


def train_plain_loop(model: torch.nn.Module, data: str | Path, *, image_size: int, batch_size: int, epochs: int,
                     lr: float, eval_epochs: Sequence[int] = (), seed: int = 0, weight_decay: float = 1e-4,
                     on_epoch: Callable[[int, LoopResult], None] | None = None) -> LoopResult:
    """Train ``model`` (transformers' D-FINE, in train mode) on ``data`` the plain way; evaluate after
    ``eval_epochs`` (1-based) with dfine's evaluator. Evaluation time is not counted in ``epoch_seconds``."""
    spec = resolve_dataset(data)
    train_set = spec.build("train", EvalTransforms(image_size))
    val_set = spec.build("val", EvalTransforms(image_size)) if "val" in spec.splits else None
    val_loader = (build_dataloader(val_set, 8, shuffle=False, workers=0, collate_fn=BatchCollator(image_size))
                  if val_set is not None else None)
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=weight_decay)
    order = random.Random(seed)
    flips = random.Random(seed + 1)
    result = LoopResult(lr=lr, images_per_epoch=len(train_set) // batch_size * batch_size)
    for epoch in range(1, epochs + 1):
        model.train()
        indices = list(range(len(train_set)))
        order.shuffle(indices)
        started = time.perf_counter()
        for first in range(0, len(indices) - batch_size + 1, batch_size):  # the last incomplete batch is dropped
            images, labels = [], []
            for i in indices[first:first + batch_size]:
                pixels, target = train_set[i]
                if flips.random() < 0.5:
                    pixels, target = _flip(pixels, target)
                images.append(pixels)
                labels.append({"class_labels": target["class_labels"].to(device), "boxes": target["boxes"].to(device)})
            outputs = model(pixel_values=torch.stack(images).to(device), labels=labels)
            optimizer.zero_grad(set_to_none=True)
            outputs.loss.backward()
            optimizer.step()
        result.epoch_seconds.append(time.perf_counter() - started)
        if epoch in eval_epochs and val_loader is not None:
            metrics = evaluate(model, val_loader, val_set.coco_ground_truth(), list(spec.names), device)
            result.ap[epoch] = {"AP": float(metrics.AP), "AP50": float(metrics.AP50)}
        if on_epoch is not None:
            on_epoch(epoch, result)
    return result
