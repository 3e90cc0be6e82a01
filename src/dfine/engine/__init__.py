"""Training and evaluation: the recipe's optimizer and schedule, EMA, checkpoints, the loop, COCO metrics, DDP.

Entry points: :func:`train` and :func:`val` (also ``dfine.train`` / ``dfine.val``). The parts, for custom loops:

- :mod:`~dfine.engine.hparams`: the per-size recipe scaled to the batch size and data set
  (:func:`resolve_hyperparameters`);
- :mod:`~dfine.engine.optim`: parameter groups, AdamW, the warm-up schedule;
- :mod:`~dfine.engine.ema`: :class:`ModelEMA`;
- :mod:`~dfine.engine.step`: one AMP/clipped/NaN-safe optimizer step; :mod:`~dfine.engine.trainer`: the epochs;
- :mod:`~dfine.engine.checkpoint`: ``last.pt`` and ``best/``; :mod:`~dfine.engine.validate`: one COCO evaluation;
- :mod:`~dfine.engine.evaluator`, :mod:`~dfine.engine.logger`, :mod:`~dfine.engine.plots`,
  :mod:`~dfine.engine.distributed`: metrics, logs, plots and process-group helpers.

Names are imported lazily (PEP 562): importing one engine module does not import the whole training stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dfine.utils.lazy import lazy_exports

_EXPORTS = {
    # api
    "train": "dfine.engine.api",
    "val": "dfine.engine.api",
    "TrainResult": "dfine.engine.api",
    # recipe, optimizer, EMA, step, loop
    "Hyperparameters": "dfine.engine.hparams",
    "resolve_hyperparameters": "dfine.engine.hparams",
    "parameter_groups": "dfine.engine.optim",
    "build_optimizer": "dfine.engine.optim",
    "LRSchedule": "dfine.engine.schedule",
    "build_lr_schedule": "dfine.engine.schedule",
    "ModelEMA": "dfine.engine.ema",
    "train_step": "dfine.engine.step",
    "StepOutcome": "dfine.engine.step",
    "Trainer": "dfine.engine.trainer",
    "build_training_model": "dfine.engine.build",
    "ModelReport": "dfine.engine.build",
    # checkpoints and evaluation
    "save_checkpoint": "dfine.engine.checkpoint",
    "load_checkpoint": "dfine.engine.checkpoint",
    "save_best_model": "dfine.engine.checkpoint",
    "evaluate": "dfine.engine.validate",
    "CocoEvaluator": "dfine.engine.evaluator",
    "EvalResult": "dfine.engine.evaluator",
    "ClassAP": "dfine.engine.evaluator",
    # logging, plots, distributed
    "MetricsLogger": "dfine.engine.logger",
    "MetricMeter": "dfine.engine.logger",
    "read_metrics": "dfine.engine.logger",
    "plot_results": "dfine.engine.plots",
    "init_distributed": "dfine.engine.distributed",
    "cleanup_distributed": "dfine.engine.distributed",
    "seed_everything": "dfine.engine.distributed",
    "reduce_dict": "dfine.engine.distributed",
    "get_rank": "dfine.engine.distributed",
    "get_world_size": "dfine.engine.distributed",
    "is_main_process": "dfine.engine.distributed",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)


if TYPE_CHECKING:
    from dfine.engine.api import TrainResult, train, val
    from dfine.engine.build import ModelReport, build_training_model
    from dfine.engine.checkpoint import load_checkpoint, save_best_model, save_checkpoint
    from dfine.engine.distributed import (
        cleanup_distributed,
        get_rank,
        get_world_size,
        init_distributed,
        is_main_process,
        reduce_dict,
        seed_everything,
    )
    from dfine.engine.ema import ModelEMA
    from dfine.engine.evaluator import ClassAP, CocoEvaluator, EvalResult
    from dfine.engine.hparams import Hyperparameters, resolve_hyperparameters
    from dfine.engine.logger import MetricMeter, MetricsLogger, read_metrics
    from dfine.engine.optim import build_optimizer, parameter_groups
    from dfine.engine.plots import plot_results
    from dfine.engine.schedule import LRSchedule, build_lr_schedule
    from dfine.engine.step import StepOutcome, train_step
    from dfine.engine.trainer import Trainer
    from dfine.engine.validate import evaluate
