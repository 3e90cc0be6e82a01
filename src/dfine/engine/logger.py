"""Training metrics: running averages within an epoch, and one record per epoch on disk.

``metrics.jsonl`` holds one JSON object per line and per epoch::

    {"epoch": 3, "lr": [2.5e-05, 0.00025], "train": {"loss": 31.2, "loss_vfl": 0.61, ...},
     "eval": {"AP": 0.412, "AP50": 0.58, ...}, "time": 512.3}

(the original writes the same information to ``log.txt`` with ``train_``/``test_`` key prefixes). ``epoch`` is the
0-based index, as in ``last.pt`` and the original's log; the console, ``results.png`` and TensorBoard count from 1
("epoch 4/20" is ``"epoch": 3``). Non-finite numbers
are written as ``null`` so the file stays strict JSON. TensorBoard scalars go through ``torch.utils.tensorboard``
when the ``tensorboard`` package is installed. Only the main process writes anything.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import statistics
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from dfine.engine.distributed import all_gather_object, get_world_size, is_main_process

logger = logging.getLogger(__name__)

METRICS_FILENAME = "metrics.jsonl"


def _to_float(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().item())
    return float(value)


class SmoothedValue:
    """A series of values with a windowed median/mean and a global mean.

    Args:
        window_size: how many recent values the windowed statistics use (the progress bar shows these).
    """

    def __init__(self, window_size: int = 20) -> None:
        self.window: deque[float] = deque(maxlen=window_size)
        self.total = 0.0
        self.count = 0

    def update(self, value: float | torch.Tensor, n: int = 1) -> None:
        """Add ``value``, counted ``n`` times in the global mean (e.g. ``n`` = batch size)."""
        value = _to_float(value)
        self.window.append(value)
        self.total += value * n
        self.count += n

    @property
    def value(self) -> float:
        """The latest value (NaN before the first update)."""
        return self.window[-1] if self.window else math.nan

    @property
    def median(self) -> float:
        """Median of the window."""
        if not self.window:
            return math.nan
        return float(statistics.median(self.window))

    @property
    def avg(self) -> float:
        """Mean of the window."""
        return sum(self.window) / len(self.window) if self.window else math.nan

    @property
    def global_avg(self) -> float:
        """Mean of everything since construction (the number logged per epoch)."""
        return self.total / self.count if self.count else math.nan

    def synchronize(self) -> None:
        """Sum ``total`` and ``count`` over all ranks so that :attr:`global_avg` is the all-rank mean.

        The window stays local: it only feeds the progress bar. Must be called on every rank.
        """
        if get_world_size() == 1:
            return
        parts = all_gather_object((self.total, self.count))
        self.total = sum(total for total, _ in parts)
        self.count = sum(count for _, count in parts)

    def __repr__(self) -> str:
        return f"SmoothedValue(value={self.value:.4f}, global_avg={self.global_avg:.4f}, count={self.count})"


class MetricMeter:
    """Named :class:`SmoothedValue` series, e.g. every loss term of an epoch.

    Args:
        window_size: window of each series.
    """

    def __init__(self, window_size: int = 20) -> None:
        self.window_size = window_size
        self.meters: dict[str, SmoothedValue] = {}

    def update(self, values: Mapping[str, float | torch.Tensor], n: int = 1) -> None:
        """Add one value per name; unseen names start a new series. Non-finite values are kept (they should show)."""
        for name, value in values.items():
            if name not in self.meters:
                self.meters[name] = SmoothedValue(self.window_size)
            self.meters[name].update(value, n)

    def __getitem__(self, name: str) -> SmoothedValue:
        return self.meters[name]

    def __contains__(self, name: str) -> bool:
        return name in self.meters

    def averages(self) -> dict[str, float]:
        """Global average of every series (what goes into ``metrics.jsonl``)."""
        return {name: meter.global_avg for name, meter in self.meters.items()}

    def postfix(self, names: Iterable[str] | None = None, fmt: str = "{:.4f}") -> dict[str, str]:
        """Windowed medians formatted for ``tqdm.set_postfix`` (robust to the odd spiky batch).

        Args:
            names: which series, in order; all by default.
            fmt: format of each value.
        """
        selected = list(self.meters) if names is None else [n for n in names if n in self.meters]
        return {name: fmt.format(self.meters[name].median) for name in selected}

    def synchronize(self) -> None:
        """Make the global averages all-rank averages. Must be called on every rank.

        Ranks may have seen different names (a term missing on one rank): the totals are exchanged by name, so
        mismatched key sets neither hang nor add unrelated terms.
        """
        if get_world_size() == 1:
            return
        local = {name: (meter.total, meter.count) for name, meter in self.meters.items()}
        merged: dict[str, list[float]] = {}
        for part in all_gather_object(local):
            for name, (total, count) in part.items():
                entry = merged.setdefault(name, [0.0, 0])
                entry[0] += total
                entry[1] += count
        for name, (total, count) in merged.items():
            meter = self.meters.setdefault(name, SmoothedValue(self.window_size))
            meter.total, meter.count = total, int(count)

    def __str__(self) -> str:
        return "  ".join(f"{name}: {meter.median:.4f} ({meter.global_avg:.4f})" for name, meter in self.meters.items())


def _json_safe(value: Any) -> Any:
    """Plain JSON types, with NaN/inf as ``None`` (Python's json would write the non-standard ``NaN``)."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().tolist()
        return _json_safe(value)
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if hasattr(value, "item") and not isinstance(value, (int, float)):  # NumPy scalars
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):
        return value
    return str(value)


def _ends_with_newline(path: Path) -> bool:
    """Whether ``path`` is missing, empty or ends with a newline (a complete last line)."""
    try:
        with path.open("rb") as file:
            if file.seek(0, 2) == 0:
                return True
            file.seek(-1, 2)
            return file.read(1) == b"\n"
    except FileNotFoundError:
        return True


def _tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


class MetricsLogger:
    """Per-epoch metrics to ``metrics.jsonl`` and, when available, TensorBoard.

    On ranks other than 0 every method is a no-op, so the training loop can call it unconditionally.

    Args:
        output_dir: run folder; created if needed. ``metrics.jsonl`` is appended to, so a resumed run continues
            the same file (:func:`read_metrics` keeps the last record of a repeated epoch).
        use_tensorboard: also write TensorBoard event files into ``output_dir/tensorboard``.
    """

    def __init__(self, output_dir: str | Path, use_tensorboard: bool = True) -> None:
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / METRICS_FILENAME
        self.enabled = is_main_process()
        self._writer: Any = None
        if not self.enabled:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if use_tensorboard:
            if _tensorboard_available():
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(self.output_dir / "tensorboard"))
            else:
                logger.info("tensorboard is not installed; metrics go to %s only", self.path)

    @property
    def tensorboard_dir(self) -> Path | None:
        """Where event files go, or ``None`` when TensorBoard is off."""
        return Path(self._writer.log_dir) if self._writer is not None else None

    def log_scalars(self, step: int, scalars: Mapping[str, float | torch.Tensor], prefix: str = "") -> None:
        """Write scalars to TensorBoard only (e.g. per-iteration loss), tagged ``prefix + name``."""
        if self._writer is None:
            return
        for name, value in scalars.items():
            value = _to_float(value)
            if math.isfinite(value):
                self._writer.add_scalar(f"{prefix}{name}", value, step)

    def log_epoch(
        self,
        epoch: int,
        train: Mapping[str, float | torch.Tensor] | None = None,
        eval_metrics: Mapping[str, Any] | None = None,
        lr: float | Sequence[float] | None = None,
        epoch_time: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append one epoch's record and mirror its scalars to TensorBoard.

        Args:
            epoch: epoch index (as the training loop counts it).
            train: averaged loss terms (``MetricMeter.averages()``), e.g. ``{"loss": ..., "loss_vfl": ...}``.
            eval_metrics: evaluation numbers, e.g. ``EvalResult.as_dict(per_class=False)``; nested dicts are kept
                in the JSON, only numbers go to TensorBoard.
            lr: learning rate(s), one per optimizer parameter group.
            epoch_time: seconds the epoch took.
            extra: further JSON-able fields stored as they are (e.g. ``{"stage": 2}``).

        Returns:
            The record as written (an empty dict on non-main ranks).
        """
        if not self.enabled:
            return {}
        record: dict[str, Any] = {"epoch": int(epoch)}
        if lr is not None:
            record["lr"] = [float(v) for v in lr] if isinstance(lr, Sequence) else [float(lr)]
        if train:
            record["train"] = {name: _to_float(value) for name, value in train.items()}
        if eval_metrics:
            record["eval"] = dict(eval_metrics)
        if epoch_time is not None:
            record["time"] = float(epoch_time)
        if extra:
            record.update(extra)
        record["timestamp"] = time.time()
        record = _json_safe(record)
        # a run killed mid-write leaves a line without its newline: the resumed run's record would join it and be
        # skipped along with it by read_metrics, so it starts a line of its own
        start = "\n" if not _ends_with_newline(self.path) else ""
        with self.path.open("a", encoding="utf-8") as file:
            file.write(start + json.dumps(record, allow_nan=False) + "\n")

        if self._writer is not None:
            # TensorBoard's axis counts epochs from 1, as the console and results.png do; metrics.jsonl keeps the
            # 0-based index that last.pt and the original's log.txt use
            step = int(epoch) + 1
            self.log_scalars(step, record.get("train", {}), prefix="train/")
            names = record.get("lr_groups") or []  # the trainer's names for the "lr" list (backbone, ...)
            for group, value in enumerate(record.get("lr", [])):
                tag = names[group] if group < len(names) else f"group_{group}"
                self._writer.add_scalar(f"lr/{tag}", value, step)
            numeric_eval = {k: v for k, v in record.get("eval", {}).items() if isinstance(v, (int, float))}
            self.log_scalars(step, numeric_eval, prefix="eval/")
            mask_eval = (record.get("eval") or {}).get("segm") or {}  # a segmentation model's mask metrics
            self.log_scalars(step, {k: v for k, v in mask_eval.items() if isinstance(v, (int, float))},
                             prefix="eval/mask_")
            if "time" in record:
                self._writer.add_scalar("time/epoch_seconds", record["time"], step)
            self._writer.flush()
        return record

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def read_metrics(path: str | Path, latest_per_epoch: bool = True) -> list[dict[str, Any]]:
    """Read ``metrics.jsonl`` (or the run folder holding it).

    A line that does not parse (a run killed mid-write) is skipped with a warning rather than failing.

    Args:
        path: the file, or its folder.
        latest_per_epoch: when an epoch appears more than once (a resumed run re-logging it), keep only its last
            record and sort by epoch; ``False`` returns every record in file order.

    Returns:
        The records as dicts.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILENAME
    records: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s:%d is not valid JSON; skipped", path, number)
                continue
            if isinstance(record, dict):
                records.append(record)
    if not latest_per_epoch:
        return records
    by_epoch: dict[Any, dict[str, Any]] = {}
    for record in records:
        by_epoch[record.get("epoch")] = record
    return sorted(by_epoch.values(), key=lambda r: (r.get("epoch") is None, r.get("epoch") or 0))
