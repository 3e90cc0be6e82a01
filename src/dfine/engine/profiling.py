"""Where a training run's time goes (``dfine train --profile``): wall-clock time per phase, per epoch and in total.

The phases partition the main process' time: waiting for the data loader, the forward pass (without the loss),
the loss with its matching, the backward pass, the optimizer step (clipping, AdamW, schedule), the EMA update,
evaluation, and checkpoint/log/plot writes; what is left is ``other`` (progress bars, the loop itself). Data
decoding and augmentation run in the loader's worker processes, overlapped with training: their time is measured
there and reported apart (``augmentation (workers)``), since it costs the main process only the part it waits for.

Timing is by ``time.perf_counter``; on a GPU each phase boundary synchronises the device first, which serialises
the pipeline a little (profiling costs some speed there; on the CPU it costs nothing measurable). The loss is
timed with forward hooks on the model's criterion, so the model code itself knows nothing of profiling.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

PHASES = ("data wait", "forward", "loss + matching", "backward", "optimizer", "EMA", "evaluation",
          "checkpoint + logs", "other")
WORKER_PHASE = "augmentation (workers)"


class PhaseTimer:
    """Accumulates seconds per phase. A disabled timer does nothing (``phase`` costs one function call).

    Args:
        enabled: measure at all.
        device: the training device (CUDA work is synchronised at each boundary when enabled).
    """

    def __init__(self, enabled: bool = False, device: torch.device | None = None) -> None:
        self.enabled = enabled
        self._cuda = enabled and device is not None and device.type == "cuda"
        self.epoch: dict[str, float] = defaultdict(float)
        self.total: dict[str, float] = defaultdict(float)
        self._epoch_started = 0.0
        self._hooked: list[Any] = []

    def _sync(self) -> None:
        if self._cuda:
            torch.cuda.synchronize()

    def add(self, name: str, seconds: float) -> None:
        """Count ``seconds`` towards phase ``name`` (this epoch and the run)."""
        if self.enabled:
            self.epoch[name] += seconds
            self.total[name] += seconds

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the body as phase ``name``."""
        if not self.enabled:
            yield
            return
        self._sync()
        started = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.add(name, time.perf_counter() - started)

    def watch_loss(self, model: nn.Module) -> None:
        """Time the model's criterion (``model.criterion``, unwrapped from DDP) as ``loss + matching``; the
        forward phase then excludes it (the criterion runs inside the model's forward)."""
        if not self.enabled:
            return
        inner = getattr(model, "module", model)
        criterion = getattr(inner, "criterion", None)
        if not isinstance(criterion, nn.Module):
            return
        started: list[float] = []

        def before(module: nn.Module, args: Any) -> None:
            self._sync()
            started.append(time.perf_counter())

        def after(module: nn.Module, args: Any, output: Any) -> None:
            self._sync()
            self.add("loss + matching", time.perf_counter() - started.pop())

        self._hooked = [criterion.register_forward_pre_hook(before), criterion.register_forward_hook(after)]

    def start_epoch(self) -> None:
        self.epoch = defaultdict(float)
        self._epoch_started = time.perf_counter()

    def end_epoch(self) -> dict[str, float]:
        """This epoch's seconds per phase, ``other`` being the rest of its wall time; ``epoch`` is the total."""
        wall = time.perf_counter() - self._epoch_started
        loss = self.epoch.get("loss + matching", 0.0)  # measured inside the forward call: moved out of it
        self.epoch["forward"] = self.epoch.get("forward", 0.0) - loss
        self.total["forward"] -= loss
        main = sum(v for k, v in self.epoch.items() if k in PHASES)
        self.epoch["other"] = max(0.0, wall - main)
        self.total["other"] += self.epoch["other"]
        self.total["epoch"] += wall
        return {**self.epoch, "epoch": wall}

    def close(self) -> None:
        for handle in self._hooked:
            handle.remove()
        self._hooked = []


def breakdown_table(seconds: dict[str, float], title: str) -> str:
    """A table of ``seconds`` per phase with shares of the wall time (``seconds["epoch"]``)."""
    wall = seconds.get("epoch", 0.0) or sum(seconds.get(p, 0.0) for p in PHASES)
    lines = [title]
    for name in (*PHASES, WORKER_PHASE):
        if name in seconds:
            share = f"{100 * seconds[name] / wall:5.1f}%" if wall and name != WORKER_PHASE else "  (overlapped)"
            lines.append(f"  {name:<24} {seconds[name]:8.2f} s {share}")
    lines.append(f"  {'total (wall)':<24} {wall:8.2f} s")
    return "\n".join(lines)


def timed_batches(batches: Iterable[dict[str, Any]], timer: PhaseTimer) -> Iterator[dict[str, Any]]:
    """``batches``, the time spent waiting for each one counted as ``data wait``."""
    iterator = iter(batches)
    while True:
        with timer.phase("data wait"):
            batch = next(iterator, None)
        if batch is None:
            return
        yield batch


def save_profile(totals: dict[str, float], path: Path) -> None:
    """The run's seconds per phase as JSON (atomically)."""
    import json

    from dfine.utils.files import atomic_write_text

    atomic_write_text(path, json.dumps(dict(totals), indent=2, sort_keys=True) + "\n")
