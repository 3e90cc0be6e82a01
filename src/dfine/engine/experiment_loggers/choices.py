"""Which experiment loggers a run uses: the names ``--logger`` / ``train(logger=...)`` accept, checked up front.

Torch-free and cheap (no logger package is imported here): :meth:`dfine.engine.arguments.TrainOptions.check` calls
:func:`check_logger_names` and :func:`check_installed` before the data check, so a typo or a missing package is one
line before any work starts.

TensorBoard keeps the default it had before ``--logger`` existed: on whenever the ``tensorboard`` package is
installed (:class:`dfine.engine.logger.MetricsLogger`). Naming it only makes it required: a run that asks for it
without the package stops at once instead of training without it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dfine.errors import ConfigError
from dfine.utils.checks import shown


@dataclass(frozen=True)
class LoggerChoice:
    """One ``--logger`` value.

    Attributes:
        name: the value (``wandb``).
        title: how messages name it (``W&B``).
        module: the package it needs, as imported.
        install: what to run when that package is missing.
    """

    name: str
    title: str
    module: str
    install: str


CHOICES: dict[str, LoggerChoice] = {choice.name: choice for choice in (
    LoggerChoice("tensorboard", "TensorBoard", "tensorboard", 'pip install "dfine[tensorboard]"'),
    LoggerChoice("wandb", "W&B", "wandb", 'pip install "dfine[wandb]"'),
    LoggerChoice("mlflow", "MLflow", "mlflow", 'pip install "dfine[mlflow]" (or the full mlflow package)'),
)}
NONE = "none"  # no experiment logger: on --resume, stop logging where the run logged before


def is_installed(name: str) -> bool:
    """Whether the package logger ``name`` needs can be imported (found, not imported)."""
    return importlib.util.find_spec(CHOICES[name].module) is not None


def check_logger_names(value: Any) -> tuple[str, ...] | None:
    """The logger names ``value`` asks for, in order, each once; None when ``value`` is None (not given).

    ``value`` is a name, a comma-separated list of names (``"wandb,mlflow"``) or a list of them (``--logger`` given
    several times); ``"none"`` (alone) is the empty choice. Anything else is a :class:`ConfigError` listing the
    choices.
    """
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Sequence) or not all(isinstance(item, str) for item in items):
        raise ConfigError(f"logger must be a name or a list of names ({', '.join(CHOICES)}), got {shown(value)}")
    names: list[str] = []
    for item in items:
        for name in (part.strip().lower() for part in item.split(",")):
            if name not in CHOICES and name not in (NONE, ""):
                raise ConfigError(f"unknown logger {name!r}: choose from {', '.join(CHOICES)} (or {NONE})")
            if name in CHOICES and name not in names:
                names.append(name)
    return tuple(names)


def check_installed(names: Sequence[str], why: str = "") -> None:
    """A :class:`ConfigError` naming the install command for the first of ``names`` whose package is missing."""
    for name in names:
        if not is_installed(name):
            choice = CHOICES[name]
            raise ConfigError(f"logging to {choice.title}{why} needs the {choice.module} package: {choice.install}")


def resumed_logger_names(given: tuple[str, ...] | None, saved_runs: Mapping[str, Any]) -> tuple[str, ...]:
    """The loggers of a run: those given, or on a resume without ``logger``, those the checkpoint's run logged to
    (``saved_runs``, from ``last.pt``), so that ``dfine train --resume`` alone keeps logging where it did.

    A logger inherited that way whose package is now missing is a :class:`ConfigError` too (``--logger none`` or
    another choice continues without it): silently dropping it would leave a hole in the experiment's record.
    """
    if given is not None:
        return given
    names = tuple(name for name in saved_runs if name in CHOICES)
    check_installed(names, " (as the resumed run did; --logger none continues without it)")
    return names
