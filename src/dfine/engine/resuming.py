"""Resuming a training run: which checkpoint, read the same on every rank, and which options may differ."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dfine.engine import checkpoint as ckpt
from dfine.engine.distributed import broadcast_object, get_rank, get_world_size, read_agreed
from dfine.errors import ConfigError, DFineError, InputFileError

logger = logging.getLogger("dfine")

__all__ = ["CHANGEABLE_ON_RESUME", "apply_resume_changes", "check_resume_options", "resume_checkpoint",
           "resumed_amp", "resumed_eval_interval"]

# Options that only decide when a run stops, like the number of epochs: a resume may change them. Seeing a run level
# off and resuming it with --patience is the common case; a run that predates the option must accept it too.
CHANGEABLE_ON_RESUME = ("patience",)


def resume_checkpoint(resume: bool | str | Path, output_dir: Path) -> tuple[Path | None, dict[str, Any] | None]:
    """The checkpoint ``resume`` names and its contents, the same on every rank.

    Rank 0 decides: its error, if the checkpoint is missing or unreadable, is raised on every rank (an error on one
    node only would leave the others waiting), and nodes that do not have the run folder get rank 0's copy.
    """
    if get_world_size() == 1:
        path = ckpt.resume_path(resume, output_dir)
        return path, (ckpt.load_checkpoint(path) if path is not None else None)
    decided: Path | DFineError | None = None
    if get_rank() == 0:
        try:
            decided = ckpt.resume_path(resume, output_dir)
        except DFineError as error:
            decided = error
    decided = broadcast_object(str(decided) if isinstance(decided, DFineError) else decided)
    if isinstance(decided, str):
        raise DFineError(decided)
    if decided is None:
        return None, None
    state, problem = read_agreed(decided, ckpt.load_checkpoint, (DFineError,))
    if problem is not None:
        raise DFineError(problem)
    if state is None:  # rank 0 has no such file: every rank says so
        raise InputFileError(decided, "no such checkpoint to resume")
    return decided, state


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists: checkpoints store sequences as lists (``Hyperparameters.to_dict``), while
    checked overrides hold the fields' tuples, and the two must compare equal when the numbers are."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def check_resume_options(state: dict[str, Any], hp: Any, overrides: dict[str, Any], *, batch_size: int | None,
                          lr: float | None, image_size: int) -> None:
    """A resumed run keeps the checkpoint's settings: the same options are fine, different ones are refused (model
    options) or ignored with a warning (batch size, learning rate, image size); :data:`CHANGEABLE_ON_RESUME` are
    left to :func:`apply_resume_changes`."""
    saved = {**state["config"], **state["hparams"]}
    changed = sorted(k for k, v in overrides.items()
                     if k not in CHANGEABLE_ON_RESUME and (k not in saved or _plain(saved[k]) != _plain(v)))
    if changed:
        raise ConfigError(f"options cannot change when resuming: {', '.join(changed)} differ from the checkpoint's")
    for name, given, kept in (("batch_size", batch_size, hp.batch_size), ("lr", lr, hp.lr),
                              ("image_size", image_size, state["image_size"][0])):
        if given is not None and given != kept and not (name == "image_size" and given == 640):
            logger.warning("resuming: %s=%s ignored, the checkpoint's %s is kept", name, given, kept)


def apply_resume_changes(hp: Any, overrides: dict[str, Any]) -> None:
    """Give ``hp`` the :data:`CHANGEABLE_ON_RESUME` options of ``overrides`` that differ, with a note for the run's
    summary. The new values are saved in the next checkpoint, so a later resume keeps them."""
    # a new run checks its values as it makes them (hparams._validate); a resume's changes need the same check,
    # or a negative patience would end the run at its first evaluation
    if overrides.get("patience", 0) < 0:
        raise ConfigError(f"patience must be >= 0 (0: no early stopping), got {overrides['patience']}")
    for name in CHANGEABLE_ON_RESUME:
        if name in overrides and overrides[name] != getattr(hp, name):
            hp.notes.append(f"{name} changed from {getattr(hp, name)} to {overrides[name]} on resume")
            setattr(hp, name, overrides[name])


def resumed_eval_interval(state: dict[str, Any], eval_interval: int | None, notes: list[str]) -> int:
    """The evaluation interval of a resumed run: the checkpoint's when ``eval_interval`` is not given (None), so that
    ``--resume`` alone continues the run as it was (which epochs are evaluated decides best/ and the state stage 2
    restarts from); a value given on purpose is used, with a note. A checkpoint that predates the record: 1."""
    saved = state.get("extra", {}).get("eval_interval")
    if eval_interval is None:
        if saved is None:
            return 1
        notes.append(f"eval_interval {saved} kept from the checkpoint")
        return int(saved)
    if saved is None or int(saved) == eval_interval:
        return eval_interval
    notes.append(f"eval_interval changed from {saved} to {eval_interval} on resume")
    return eval_interval


def resumed_amp(state: dict[str, Any], amp: bool | None, device_default: bool, notes: list[str]) -> bool | None:
    """Mixed precision of a resumed run: the checkpoint's when ``amp`` is not given, so that a run started with
    ``--no-amp`` (often because of NaNs under fp16) does not resume under the device's default (``device_default``:
    whether this device would use it); a note says so when the two differ."""
    saved = state.get("extra", {}).get("amp")
    if amp is not None or saved is None:
        return amp
    if bool(saved) != device_default:
        notes.append(f"mixed precision {'on' if saved else 'off'} kept from the checkpoint")
    return bool(saved)
