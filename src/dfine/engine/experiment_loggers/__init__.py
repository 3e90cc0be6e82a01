"""Experiment loggers: ``dfine train --logger tensorboard|wandb|mlflow`` (``train(logger=[...])``).

- :mod:`~dfine.engine.experiment_loggers.choices`: the accepted names, checked before any work (torch-free);
- :mod:`~dfine.engine.experiment_loggers.base`: the :class:`ExperimentLogger` interface every backend implements;
- :mod:`~dfine.engine.experiment_loggers.fanout`: :class:`ExperimentLog`, the one object the trainer calls;
- :mod:`~dfine.engine.experiment_loggers.session`: starting, resuming and ending the runs around ``Trainer.fit``;
- one module per backend: ``tensorboard_backend``, ``wandb_backend``, ``mlflow_backend`` (each imports its package
  only when started, so none is needed unless chosen).

``metrics.jsonl`` stays the run's complete record (resuming and ``results.png`` read it); these loggers mirror it.
"""

from __future__ import annotations

from dfine.engine.experiment_loggers.base import ExperimentLogger, StartInfo, metric_name
from dfine.engine.experiment_loggers.choices import CHOICES, check_installed, check_logger_names
from dfine.engine.experiment_loggers.fanout import ExperimentLog, epoch_metrics

__all__ = ["CHOICES", "ExperimentLog", "ExperimentLogger", "StartInfo", "check_installed", "check_logger_names",
           "epoch_metrics", "metric_name"]
