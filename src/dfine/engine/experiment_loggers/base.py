"""The interface every experiment logger implements, and what it is given to start a run.

A backend (TensorBoard, W&B, MLflow) is a small class with the methods of :class:`ExperimentLogger`; the training
loop never calls one directly but through :class:`~dfine.engine.experiment_loggers.fanout.ExperimentLog`, which
fans each call out, names the metrics the same way for all of them, and switches a backend off (with a warning)
when it fails in the middle of a run, so that a logging service never ends a training run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

# MLflow accepts letters, digits, "_", "-", ".", " ", ":" and "/" in metric names; W&B and TensorBoard accept those
# too, so one name per metric works everywhere ("profile/loss + matching" becomes "profile/loss_matching")
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_\-./]+")


def metric_name(name: str) -> str:
    """``name`` with the characters some logger refuses replaced by ``_``."""
    return _NOT_ALLOWED.sub("_", name.strip()).strip("_") or "_"


@dataclass
class StartInfo:
    """What a backend needs to start (or continue) its run.

    Attributes:
        output_dir: the training run's folder.
        run_name: the name shown in the logger's interface (the run folder's name).
        previous: what the backend's :meth:`ExperimentLogger.resume_info` returned for the checkpoint being resumed
            (empty for a new run, or when the run did not use this logger).
        say: prints a line for the user (rank 0).
    """

    output_dir: Path
    run_name: str
    previous: Mapping[str, Any] = field(default_factory=dict)
    say: Callable[[str], None] = print


class ExperimentLogger(Protocol):
    """One experiment logger's run. Steps count epochs from 1, as the console, ``results.png`` and TensorBoard do.

    Attributes:
        name: the ``--logger`` value.
        epoch_scalars: whether :meth:`log_metrics` should receive each epoch's record (TensorBoard's come from
            :class:`~dfine.engine.logger.MetricsLogger`, which writes them next to ``metrics.jsonl``).
    """

    name: str
    epoch_scalars: bool

    def log_params(self, params: Mapping[str, Any]) -> None:
        """The run's settings, once at the start: a nested dict (``{"hparams": {...}, "model": {...}, ...}``)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Finite numbers, named by :func:`metric_name`, at ``step``."""

    def log_image(self, name: str, path: Path, step: int) -> None:
        """A picture file (``train_batch0.jpg``, ``results.png``) under ``name``."""

    def log_summary(self, metrics: Mapping[str, float], step: int) -> None:
        """The run's final numbers (the best epoch's metrics); ``step`` is that epoch."""

    def log_model(self, folder: Path) -> None:
        """The ``best/`` folder as an artifact (only with ``log_model=True``)."""

    def resume_info(self) -> dict[str, Any]:
        """What a resumed run needs to continue this run (stored in ``last.pt``); empty when it cannot."""

    def finish(self, status: str) -> None:
        """End the run: ``status`` is ``"finished"``, ``"failed"`` or ``"killed"`` (interrupted)."""
