"""One object the training loop calls for all experiment loggers: :class:`ExperimentLog`.

It turns the loop's records into metric names shared by every backend (the tags TensorBoard has always used:
``train/loss_vfl``, ``lr/backbone``, ``eval/AP50``, ``time/epoch_seconds``, plus ``profile/<phase>`` under
``--profile``), and isolates the backends from the run: once started, a backend that raises (a network error, a
full disk) is switched off with one warning and training goes on; ``metrics.jsonl`` stays the complete record.
With no backend (another rank, or no logger chosen) every method does nothing.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from dfine.engine.experiment_loggers.base import ExperimentLogger, metric_name
from dfine.errors import first_line

logger = logging.getLogger("dfine")


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (text, nested values, NaN and the ``null`` of a non-finite number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _named(prefix: str, values: Mapping[str, Any]) -> dict[str, float]:
    numbers = {metric_name(f"{prefix}{name}"): _number(value) for name, value in values.items()}
    return {name: value for name, value in numbers.items() if value is not None}


def epoch_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of one ``metrics.jsonl`` record (:meth:`MetricsLogger.log_epoch`), named as TensorBoard's tags.

    Nested or non-numeric values (per-class AP, ``null`` for a non-finite number) are left out, as in TensorBoard,
    except a segmentation model's mask metrics (``eval/mask_AP``, ...).
    """
    metrics = _named("train/", record.get("train") or {})
    groups = record.get("lr_groups") or []
    for index, lr in enumerate(record.get("lr") or []):
        metrics.update(_named("lr/", {groups[index] if index < len(groups) else f"group_{index}": lr}))
    metrics.update(_named("eval/", record.get("eval") or {}))
    metrics.update(_named("eval/mask_", (record.get("eval") or {}).get("segm") or {}))  # segmentation models
    # the running best AP is left out: "best/AP" is the best epoch's, logged once at the end (log_summary), and
    # the maximum of eval/AP is what each logger's interface shows anyway
    metrics.update(_named("", {"time/epoch_seconds": record.get("time"), "stage": record.get("stage")}))
    return metrics


class ExperimentLog:
    """Fans every call out to the started backends (rank 0 only; empty elsewhere).

    Args:
        backends: started :class:`~dfine.engine.experiment_loggers.base.ExperimentLogger` runs.
        remember: the loggers whose runs a resume continues (those chosen; TensorBoard's default is not a choice);
            None: all.
    """

    def __init__(self, backends: Iterable[ExperimentLogger] = (), remember: Iterable[str] | None = None) -> None:
        self.backends: list[ExperimentLogger] = list(backends)
        kept = None if remember is None else set(remember)
        # taken now: a backend switched off later still has its run continued by a resume
        self._resume_info: dict[str, dict[str, Any]] = {}
        for backend in self.backends:
            if kept is not None and backend.name not in kept:
                continue
            try:
                self._resume_info[backend.name] = dict(backend.resume_info())
            except Exception:  # noqa: BLE001 (the checkpoint matters more than continuing the same logger run)
                self._resume_info[backend.name] = {}

    @property
    def names(self) -> list[str]:
        """The loggers still running."""
        return [backend.name for backend in self.backends]

    def __bool__(self) -> bool:
        return bool(self.backends)

    def _each(self, call: Callable[[ExperimentLogger], Any], what: str,
              only: Callable[[ExperimentLogger], bool] | None = None, close: bool = True) -> None:
        for backend in list(self.backends):
            if only is not None and not only(backend):
                continue
            try:
                call(backend)
            except Exception as error:  # noqa: BLE001 (any failure of a logging service: it must not end training)
                logger.warning("%s: %s failed (%s); it logs nothing more in this run (metrics.jsonl has everything)",
                               backend.name, what, first_line(error))
                self.backends.remove(backend)
                if close:
                    with contextlib.suppress(Exception):  # already broken: its own finish may fail as well
                        backend.finish("failed")

    def log_params(self, params: Mapping[str, Any]) -> None:
        """The run's settings (once, at the start)."""
        self._each(lambda backend: backend.log_params(params), "logging the settings")

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        """One epoch's ``metrics.jsonl`` record, at step ``epoch + 1``."""
        if not self.backends or "epoch" not in record:
            return
        step, metrics = int(record["epoch"]) + 1, epoch_metrics(record)
        self._each(lambda backend: backend.log_metrics(metrics, step), "logging the epoch's metrics",
                   only=lambda backend: backend.epoch_scalars)

    def log_profile(self, epoch: int, seconds: Mapping[str, float]) -> None:
        """``--profile``'s seconds per phase of one epoch, as ``profile/<phase>``."""
        if not self.backends:
            return
        metrics = _named("profile/", seconds)
        self._each(lambda backend: backend.log_metrics(metrics, epoch + 1), "logging the profile")

    def log_image(self, path: Path, epoch: int) -> None:
        """A picture the run wrote (named by its file name without suffix), if it exists."""
        path = Path(path)
        if self.backends and path.is_file():
            self._each(lambda backend: backend.log_image(path.stem, path, epoch + 1), f"logging {path.name}")

    def log_summary(self, metrics: Mapping[str, Any], epoch: int) -> None:
        """The best epoch's metrics, as ``best/<name>``."""
        numbers = {**_named("best/", metrics), **_named("best/mask_", metrics.get("segm") or {})}
        if self.backends and numbers:
            self._each(lambda backend: backend.log_summary(numbers, epoch + 1), "logging the best metrics")

    def log_model(self, folder: Path) -> None:
        """The ``best/`` folder as an artifact."""
        if self.backends and Path(folder).is_dir():
            self._each(lambda backend: backend.log_model(Path(folder)), f"uploading {Path(folder).name}/")

    def resume_info(self) -> dict[str, dict[str, Any]]:
        """Per logger, what a resumed run needs to continue its run (``last.pt``'s ``extra["experiment_runs"]``)."""
        return {name: dict(info) for name, info in self._resume_info.items()}

    def finish(self, status: str = "finished") -> None:
        """End every run (``finished``, ``failed`` or ``killed``); the log is empty afterwards."""
        self._each(lambda backend: backend.finish(status), "closing its run", close=False)
        self.backends.clear()
