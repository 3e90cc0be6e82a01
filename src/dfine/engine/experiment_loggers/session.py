"""A training run's experiment loggers from start to end: :func:`experiment_log` around ``Trainer.fit``.

At the start (rank 0): each chosen logger starts its run, or continues the one ``last.pt`` names, and receives the
run's settings once (the resolved hyper-parameters, the model config, and the run's data, classes, image size, seed,
device and precision). During the run the trainer sends each epoch's metrics, ``--profile``'s breakdown and the first
training batch (``train_batch0.jpg``). At the end: ``results.png``, the best epoch's COCO metrics as ``best/<name>``,
optionally the ``best/`` folder (``log_model``: off by default, since a large model makes a slow upload and a second
copy in a local store), and the run's status (finished, failed, or killed by Ctrl-C).

A logger that cannot start (a bad ``WANDB_MODE``, an unreachable tracking server) is a one-line
:class:`~dfine.errors.DFineError` on every rank before the first epoch; once started, a failing logger is switched off
with a warning (:class:`~dfine.engine.experiment_loggers.fanout.ExperimentLog`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dfine.engine.distributed import broadcast_object, get_world_size, is_main_process
from dfine.engine.experiment_loggers.base import ExperimentLogger, StartInfo
from dfine.engine.experiment_loggers.choices import CHOICES, is_installed
from dfine.engine.experiment_loggers.fanout import ExperimentLog
from dfine.errors import DFineError, first_line

RUNS_KEY = "experiment_runs"  # last.pt's extra[RUNS_KEY]: {logger name: what it needs to continue its run}
RESULTS_PICTURE = "results.png"


def saved_runs(state: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The logger runs a checkpoint's run used (``{}`` for a new run or an older checkpoint)."""
    runs = ((state or {}).get("extra") or {}).get(RUNS_KEY) or {}
    return {str(name): dict(info or {}) for name, info in runs.items()} if isinstance(runs, Mapping) else {}


def _start_backend(name: str, info: StartInfo) -> ExperimentLogger:
    if name == "tensorboard":
        from dfine.engine.experiment_loggers.tensorboard_backend import TensorBoardLogger

        return TensorBoardLogger(info)
    if name == "wandb":
        from dfine.engine.experiment_loggers.wandb_backend import WandbLogger

        return WandbLogger(info)
    from dfine.engine.experiment_loggers.mlflow_backend import MlflowLogger

    return MlflowLogger(info)


def start_loggers(names: Sequence[str], output_dir: Path, previous: Mapping[str, Mapping[str, Any]],
                  say: Callable[[str], None] = print) -> ExperimentLog:
    """Start ``names`` (plus TensorBoard when installed, its default) for the run in ``output_dir``.

    Args:
        names: the chosen loggers; only these are remembered in ``last.pt`` for ``--resume``.
        output_dir: the run folder.
        previous: :func:`saved_runs` of the checkpoint being resumed.
        say: prints a line for the user.

    Raises:
        DFineError: a logger could not start (those already started are closed first).
    """
    wanted = list(names)
    if "tensorboard" not in wanted and is_installed("tensorboard"):
        wanted.insert(0, "tensorboard")  # on by default, as MetricsLogger's scalars are
    started: list[ExperimentLogger] = []
    for name in wanted:
        info = StartInfo(output_dir=output_dir, run_name=output_dir.resolve().name,
                         previous=previous.get(name, {}), say=say)
        try:
            started.append(_start_backend(name, info))
        except Exception as error:
            for backend in started:
                backend.finish("failed")
            message = str(error) if isinstance(error, DFineError) else first_line(error)
            raise DFineError(f"could not start logging to {CHOICES[name].title}: {message}") from error
    return ExperimentLog(started, remember=names)


def run_settings(trainer: Any) -> dict[str, Any]:
    """What a logger records of the run once: ``{"hparams": ..., "model": ..., "run": ...}`` (plain JSON)."""
    config = dict(trainer.model.config.to_dict())
    for key in ("id2label", "label2id"):  # the class names are in "run"
        config.pop(key, None)
    hparams = trainer.hparams.to_dict()
    run = {"data": trainer.data_source, "classes": list(trainer.class_names), "num_classes": len(trainer.class_names),
           "image_size": list(trainer.image_size), "seed": trainer.seed, "eval_interval": trainer.eval_interval,
           "device": str(trainer.device), "world_size": get_world_size(),
           "amp": str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype is not None else None,
           "output_dir": str(Path(trainer.output_dir).resolve())}
    return json.loads(json.dumps({"hparams": hparams, "model": config, "run": run}, default=str))


def _best_metrics(trainer: Any) -> dict[str, Any]:
    from dfine.engine.evaluator import STAT_NAMES

    best = trainer.state.best_eval or {}
    return {name: best[name] for name in STAT_NAMES if name in best}


def _close(log: ExperimentLog, trainer: Any, status: str, log_model: bool) -> None:
    """The end of the run: results.png, the best metrics and (``log_model``) best/ when it finished; the status."""
    from dfine.engine import checkpoint as ckpt

    last_epoch = max(trainer.state.start_epoch - 1, 0)
    log.log_image(trainer.output_dir / RESULTS_PICTURE, last_epoch)
    if status == "finished":
        if trainer.state.best_epoch >= 0:
            log.log_summary(_best_metrics(trainer), trainer.state.best_epoch)
        if log_model:
            log.log_model(trainer.output_dir / ckpt.BEST_DIR_NAME)
    log.finish(status)


@contextmanager
def experiment_log(names: Sequence[str], trainer: Any, previous: Mapping[str, Mapping[str, Any]] | None = None,
                   log_model: bool = False) -> Iterator[ExperimentLog]:
    """Start the loggers, give them to ``trainer`` (its ``experiment``) for the body, and end them after it.

    Every rank must enter it (a logger that cannot start is an error on all of them); only rank 0 logs.

    Args:
        names: the chosen loggers (:func:`~dfine.engine.experiment_loggers.choices.check_logger_names`).
        trainer: the :class:`~dfine.engine.trainer.Trainer` about to run.
        previous: :func:`saved_runs` of the checkpoint being resumed.
        log_model: upload ``best/`` at the end of a finished run.
    """
    log = ExperimentLog()
    problem: str | None = None
    if is_main_process():
        try:
            log = start_loggers(names, Path(trainer.output_dir), previous or {}, say=trainer.say)
        except DFineError as error:
            problem = str(error)
    problem = broadcast_object(problem)
    if problem is not None:
        raise DFineError(problem)
    if log:
        log.log_params(run_settings(trainer))
    trainer.experiment = log
    status = "failed"
    try:
        yield log
        status = "finished"
    except KeyboardInterrupt:
        status = "killed"
        raise
    finally:
        trainer.experiment = ExperimentLog()
        if log:
            _close(log, trainer, status, log_model)
