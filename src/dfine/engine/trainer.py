"""The training loop: epochs, evaluation of the EMA model, checkpoints, the stop epoch, and divergence handling.

Per epoch: ``loader.set_epoch(epoch)`` (switches augmentation and multi-scale off from the stop epoch), the data
order reseeded from ``(seed, rank, epoch)``, :func:`dfine.engine.step.train_step` per batch, evaluation of the EMA
weights (every ``eval_interval`` epochs, the last stage-1 epoch and the last epoch), then — on rank 0 only —
``last.pt`` (atomic), ``best/`` when COCO AP improved or tied (the latest of equal epochs is kept),
``metrics.jsonl``, TensorBoard and ``results.png``.

**Stop epoch** (original: ``det_solver.py: DetSolver.fit``). At ``stop_epoch`` the whole training state of the
best stage-1 epoch (``best_stage1.pt``: model, EMA, optimizer, scaler, scheduler) is reloaded and the EMA continues with
``ema_restart_decay``; the remaining epochs train without strong augmentation. If there is no best stage-1 state (no
evaluation happened, no validation split, a run resumed in a fresh folder) training simply continues from the
current weights — the original crashes there. We do **not** run the original's stage-2 "EMA search" (restarting
from ``best_stg1`` with the EMA decay lowered by 1e-4 after every epoch that is not a new best): it selects on the
validation set epoch by epoch, so its reported score is optimistically biased, it overwrites ``best_stg2`` with
worse models after each restart, and on small custom validation sets it mostly chases noise. Stage 2 here is plain
training; ``best/`` keeps the best EMA weights of both stages, and ``last.pt`` is written in stage 2 too, so a run
can always be resumed.

**Non-finite loss** (the original's issue #133). A step whose loss is NaN/inf is skipped with a warning (nothing is
updated). After ``max_nonfinite_steps`` such steps in a row, the run rolls back to the last good state (the end of
the previous epoch, i.e. what ``last.pt`` holds, or the start of the run), halves the learning rate, says so, and
retries the epoch; after ``max_rollbacks`` rollbacks it stops with a :class:`~dfine.errors.DFineError`. The halved
rate also holds after the stop epoch restores an earlier best stage-1 state.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer

from dfine.data import EpochDataLoader
from dfine.engine import checkpoint as ckpt
from dfine.engine.best_report import reevaluate_best, write_val_report
from dfine.engine.distributed import (
    all_gather_object,
    barrier,
    get_rank,
    get_world_size,
    is_main_process,
    read_agreed,
)
from dfine.engine.ema import ModelEMA
from dfine.engine.evaluator import CocoEvaluator, EvalResult, format_ap
from dfine.engine.experiment_loggers import ExperimentLog
from dfine.engine.hparams import Hyperparameters, count_noun
from dfine.engine.logger import MetricMeter, MetricsLogger, read_metrics
from dfine.engine.mask_eval import MaskEvaluator, new_mask_evaluator
from dfine.engine.optim import current_lrs
from dfine.engine.profiling import WORKER_PHASE, PhaseTimer, breakdown_table, save_profile, timed_batches
from dfine.engine.results_plot import ResultsPlot
from dfine.engine.schedule import LRSchedule
from dfine.engine.step import StepOutcome, train_step
from dfine.engine.train_state import Diverged, TrainState, clone_state
from dfine.engine.validate import evaluate
from dfine.errors import DFineError

logger = logging.getLogger("dfine")

PREVIEW_NAME = "train_batch0.jpg"  # the first training batch with its boxes (see Trainer._save_batch_preview)


@dataclass
class Trainer:
    """Runs :meth:`fit`; every component is passed in ready-made (see :mod:`dfine.engine.api` for the wiring).

    Attributes:
        model: the model being trained, unwrapped (its weights are what is saved).
        train_model: what the loop calls: ``model`` itself, or its DistributedDataParallel wrapper.
        optimizer, scheduler, scaler, ema: training state.
        hparams: the resolved hyper-parameters.
        train_loader: an :class:`EpochDataLoader` (shuffled, ``drop_last``).
        val_loader: validation loader, or None to train without evaluation.
        val_ground_truth: COCO-format ground truth of the validation split.
        class_names: names by label.
        processor: the image processor saved next to the best weights.
        output_dir: run folder.
        device: training device.
        amp_dtype: autocast dtype, or None.
        image_size: training ``(height, width)``.
        seed: base seed (the data order of epoch e is seeded from ``(seed, rank, e)``).
        eval_interval: evaluate every this many epochs (<= 0: never; ``best/`` is then the final EMA).
        progress: show progress bars (rank 0).
        data_source: the data set trained on (stored in ``last.pt``, so a resume on other data can say so).
        profile: measure where each epoch's time goes and print it (``profile.json`` in the run folder holds the
            run's totals; :mod:`dfine.engine.profiling`).
        max_nonfinite_steps: consecutive non-finite steps that trigger a rollback.
        max_rollbacks: rollbacks after which the run stops with an error.
    """

    model: nn.Module
    train_model: nn.Module
    optimizer: Optimizer
    scheduler: LRSchedule
    scaler: torch.amp.GradScaler
    ema: ModelEMA
    hparams: Hyperparameters
    train_loader: EpochDataLoader
    val_loader: EpochDataLoader | None
    val_ground_truth: dict[str, Any] | None
    class_names: list[str]
    processor: Any
    output_dir: Path
    device: torch.device
    amp_dtype: torch.dtype | None = None
    image_size: tuple[int, int] = (640, 640)
    seed: int = 0
    eval_interval: int = 1
    progress: bool = True
    data_source: str | None = None
    max_nonfinite_steps: int = 5
    max_rollbacks: int = 2
    profile: bool = False
    state: TrainState = field(default_factory=TrainState)
    _pending_rng: dict[str, Any] | None = field(default=None, repr=False)
    _snapshot: dict[str, Any] | None = field(default=None, repr=False)
    best_result: EvalResult | None = field(default=None, repr=False)
    _last_result: EvalResult | None = field(default=None, repr=False)
    # the evaluators (their predictions) of the latest and the best evaluation, for the val/ pictures at the end
    _last_evaluator: CocoEvaluator | None = field(default=None, repr=False)
    best_evaluator: CocoEvaluator | None = field(default=None, repr=False)
    _last_mask_evaluator: MaskEvaluator | None = field(default=None, repr=False)
    best_mask_evaluator: MaskEvaluator | None = field(default=None, repr=False)  # a segmentation run's, for val/
    _timer: PhaseTimer | None = field(default=None, repr=False)
    _results_plot: ResultsPlot | None = field(default=None, repr=False)
    # W&B / MLflow / TensorBoard extras (dfine.engine.experiment_loggers.session sets it around fit); empty: no-op
    experiment: ExperimentLog = field(default_factory=ExperimentLog, repr=False)

    # ------------------------------------------------------------------------------------------ helpers
    def say(self, message: str) -> None:
        """Print on rank 0 (through tqdm, so progress bars stay intact)."""
        if is_main_process():
            from tqdm import tqdm

            tqdm.write(message)

    @property
    def paths(self) -> dict[str, Path]:
        return {"last": self.output_dir / ckpt.LAST_NAME, "stage1": self.output_dir / ckpt.BEST_STAGE1_NAME,
                "best": self.output_dir / ckpt.BEST_DIR_NAME}

    def _module_states(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def _load_module_states(self, states: dict[str, Any]) -> None:
        self.model.load_state_dict(states["model"])
        self.ema.load_state_dict(states["ema"])
        self.optimizer.load_state_dict(states["optimizer"])
        self.scheduler.load_state_dict(states["scheduler"])
        if states.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(states["scaler"])

    def checkpoint_state(self, epoch: int, rng: list[dict[str, Any]]) -> dict[str, Any]:
        """Everything ``last.pt`` holds after ``epoch`` (see :mod:`dfine.engine.checkpoint`)."""
        s = self.state
        return {
            "epoch": epoch, "stage": s.stage, "best_metric": s.best_metric, "best_epoch": s.best_epoch,
            "best_eval": s.best_eval, **self._module_states(), "config": self.model.config.to_dict(),
            "class_names": list(self.class_names), "hparams": self.hparams.to_dict(),
            "image_size": list(self.image_size), "rng": rng,
            "extra": {"rollbacks": s.rollbacks, "lr_scale": s.lr_scale, "stale_evals": s.stale_evals,
                      "world_size": get_world_size(), "eval_interval": self.eval_interval,
                      "amp": self.amp_dtype is not None,
                      "seed": self.seed, "data": self.data_source,
                      "experiment_runs": self.experiment.resume_info()},
        }

    def load_checkpoint_state(self, data: dict[str, Any]) -> None:
        """Continue from a checkpoint: module states now, the random state at the start of :meth:`fit`."""
        self._load_module_states(data)
        extra = data.get("extra", {})
        self.state = TrainState(start_epoch=int(data["epoch"]) + 1, stage=int(data.get("stage", 1)),
                                best_metric=float(data.get("best_metric", -1.0)),
                                best_epoch=int(data.get("best_epoch", -1)), best_eval=data.get("best_eval"),
                                rollbacks=int(extra.get("rollbacks", 0)), lr_scale=float(extra.get("lr_scale", 1.0)),
                                stale_evals=int(extra.get("stale_evals", 0)))
        rng = data.get("rng") or []
        if get_rank() < len(rng) and int(extra.get("world_size", len(rng))) == get_world_size():
            self._pending_rng = rng[get_rank()]
        else:
            logger.warning("the checkpoint was written by %s processes, this run has %d: the random state is not "
                           "restored, so augmentations differ from an uninterrupted run",
                           extra.get("world_size", "?"), get_world_size())

    def _seed_data_order(self, epoch: int) -> None:
        # A generator seeded per epoch (not one carried across epochs) makes the shuffle and the workers' seeds of
        # epoch e the same whether or not the run was interrupted before it.
        generator = self.train_loader.generator
        if generator is not None:
            seed = np.random.SeedSequence([self.seed, get_rank(), epoch]).generate_state(1, np.uint64)[0]
            generator.manual_seed(int(seed % (2**63)))

    # ------------------------------------------------------------------------------------------ stages
    def _enter_stage2(self, epoch: int) -> None:
        hp = self.hparams
        barrier()  # rank 0 may have just written best_stage1.pt
        path = self.paths["stage1"]
        # every rank restores the same state or none does (rank 0's file goes to nodes that do not share the run
        # folder): ranks on different states would train diverging models without a word
        data, problem = read_agreed(path, ckpt.load_checkpoint, (DFineError, RuntimeError, KeyError, ValueError))
        restored = None
        if problem is not None:  # a damaged file: said, and skipped
            logger.warning("could not reload %s (%s): continuing from the current weights", path, problem)
        elif data is not None:
            self._load_module_states(data)
            # a divergence after that epoch halved the learning rate: the restored scheduler predates the
            # back-off, which must survive the restart (the same weights diverged at the higher rate)
            saved_scale = float(data.get("extra", {}).get("lr_scale", 1.0))
            if saved_scale != self.state.lr_scale:
                self.scheduler.scale_base_lrs(self.state.lr_scale / saved_scale)
            restored = (int(data["epoch"]), float(data.get("best_metric", math.nan)))
        if restored:
            where = f"restarting from the best stage-1 state (epoch {restored[0] + 1}, AP {format_ap(restored[1])})"
        else:
            where = "no best stage-1 state exists (no evaluation gave an AP yet), so training continues as it is"
        self.ema.restart(hp.ema_restart_decay)
        self.state.stage = 2
        self.state.stale_evals = 0  # stage 2 trains differently (no strong augmentation): its own patience
        if epoch == 0:  # stop_epoch 0: the whole run is stage 2, there is nothing to restart from
            self.say(f"No strong augmentation or multi-scale in this run (stop epoch 0); EMA decay "
                     f"{hp.ema_restart_decay:.6g}")
        else:
            self.say(f"Stop epoch {epoch + 1}: strong augmentation and multi-scale off; {where}; EMA decay "
                     f"{hp.ema_restart_decay:.6g}")
        self._take_snapshot("the start of the run" if epoch == 0 else f"the start of stage 2 (epoch {epoch + 1})")

    # ------------------------------------------------------------------------------------------ divergence
    def _take_snapshot(self, origin: str) -> None:
        # The rollback target: the same states last.pt holds, kept in memory so that every rank can restore them
        # without reading a file another rank is writing.
        self._snapshot = {"states": clone_state(self._module_states()), "lr_scale": self.state.lr_scale,
                          "origin": origin}

    def _roll_back(self, diverged: Diverged) -> None:
        where = f"epoch {diverged.epoch + 1}, iteration {diverged.iteration + 1}"
        assert self._snapshot is not None
        if self.state.rollbacks >= self.max_rollbacks:
            lr = self.optimizer.param_groups[0]["lr"]
            saved = (f"; the last good state is {self.paths['last']}" if self.paths["last"].exists() else "")
            raise DFineError(
                f"training diverged: the loss was NaN/inf in {self.max_nonfinite_steps} consecutive iterations "
                f"({where}) even after {self.state.rollbacks} rollbacks with the learning rate halved each time (now "
                f"{lr:.3g}); try a lower --lr, training without --amp, or check the data set{saved}")
        new_scale = self.state.lr_scale * 0.5
        self._load_module_states(clone_state(self._snapshot["states"]))
        self.scheduler.scale_base_lrs(new_scale / self._snapshot["lr_scale"])
        self.state.lr_scale = new_scale
        self.state.rollbacks += 1
        origin = self._snapshot["origin"]
        lrs = ", ".join(f"{name} {lr:.3g}" for name, lr in current_lrs(self.optimizer).items())
        logger.warning("NaN/inf loss in %d consecutive iterations (%s): rolled back to %s and halved the learning "
                       "rate (now %s); retrying epoch %d (rollback %d of %d)", self.max_nonfinite_steps, where,
                       origin, lrs, diverged.epoch + 1, self.state.rollbacks, self.max_rollbacks)

    # ------------------------------------------------------------------------------------------ epochs
    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training loader; returns the rank-averaged loss terms (and ``skipped_steps``)."""
        from tqdm import tqdm

        self.train_loader.set_epoch(epoch)
        self._seed_data_order(epoch)
        self.train_model.train()
        meter = MetricMeter()
        in_a_row = skipped = 0
        bar = tqdm(self.train_loader, desc=f"epoch {epoch + 1}/{self.hparams.epochs}", leave=False,
                   disable=not (self.progress and is_main_process()), dynamic_ncols=True)
        timer = self.timer
        for iteration, batch in enumerate(timed_batches(bar, timer)):
            timer.add(WORKER_PHASE, float(batch.pop("worker_seconds", 0.0)))
            if epoch == 0 and iteration == 0 and is_main_process():
                with timer.phase("checkpoint + logs"):
                    self._save_batch_preview(batch)
            result = train_step(self.train_model, batch, optimizer=self.optimizer, scheduler=self.scheduler,
                                scaler=self.scaler, ema=self.ema, device=self.device, amp_dtype=self.amp_dtype,
                                clip_max_norm=self.hparams.clip_max_norm, timer=timer)
            if result.outcome is StepOutcome.NONFINITE:
                in_a_row += 1
                skipped += 1
                if is_main_process():
                    logger.warning("non-finite loss (%s) at epoch %d, iteration %d: step skipped (%d in a row)",
                                   result.loss, epoch + 1, iteration + 1, in_a_row)
                if in_a_row >= self.max_nonfinite_steps:
                    bar.close()
                    raise Diverged(epoch, iteration)
                continue
            in_a_row = 0
            meter.update(result.terms, n=result.batch_size)
            bar.set_postfix(loss=f"{meter['loss'].median:.3f}", lr=f"{self.optimizer.param_groups[-1]['lr']:.2e}")
        bar.close()
        meter.synchronize()
        averages = meter.averages()
        averages["skipped_steps"] = float(skipped)
        return averages

    def _save_batch_preview(self, batch: dict[str, Any]) -> None:
        """``train_batch0.jpg``: the first batch as the model sees it (after augmentation), boxes drawn. Wrong box
        formats, swapped classes or an augmentation that loses objects show at a glance before hours of training."""
        from dfine.imaging.draw import draw_batch
        from dfine.utils.files import atomic_write

        path = self.output_dir / PREVIEW_NAME
        try:
            picture = draw_batch(batch["pixel_values"], batch["labels"], self.class_names)
            atomic_write(path, lambda temporary: picture.save(temporary, format="JPEG", quality=90))
            self.experiment.log_image(path, epoch=0)
        except Exception as error:  # a picture must never stop a training run
            logger.warning("could not draw %s: %s", path.name, error)

    def _should_evaluate(self, epoch: int) -> bool:
        if self.val_loader is None or self.eval_interval <= 0:
            return False
        hp = self.hparams
        return (epoch + 1) % self.eval_interval == 0 or epoch == hp.epochs - 1 or epoch == hp.stop_epoch - 1

    def validate(self) -> EvalResult:
        """COCO metrics of the EMA weights on the validation loader."""
        assert self.val_loader is not None and self.val_ground_truth is not None
        self._last_evaluator = CocoEvaluator(self.val_ground_truth, self.class_names)
        self._last_mask_evaluator = new_mask_evaluator(self.ema.module, self.val_ground_truth, self.class_names)
        return evaluate(self.ema.module, self.val_loader, self.val_ground_truth, self.class_names, self.device,
                        self.amp_dtype, progress=self.progress and is_main_process(), evaluator=self._last_evaluator,
                        uncertainty=True,  # box uncertainties too, for val/'s uncertainty report
                        mask_evaluator=self._last_mask_evaluator)

    def _end_of_epoch(self, epoch: int, train_stats: dict[str, float], result: EvalResult | None,
                      seconds: float, metrics_logger: MetricsLogger) -> None:
        s = self.state
        # Ties count as a new best: with AP flat (often 0 early on small data sets) the latest weights have trained
        # longest, and keeping the first would make the stop epoch throw away every epoch since. best/ and
        # best_stage1.pt are written on the same condition, so they always hold the same epoch.
        # a segmentation run is judged by its masks (COCO segm AP), a detection run by its boxes
        ap = math.nan if result is None else result.segm.AP if result.segm is not None else result.AP
        improved = result is not None and not math.isnan(ap) and ap >= s.best_metric
        if result is not None:  # early stopping counts strict gains: a flat AP is no progress
            better = not math.isnan(ap) and ap > s.best_metric
            s.stale_evals = 0 if better else s.stale_evals + 1
        if improved:
            assert result is not None
            s.best_metric, s.best_epoch, s.best_eval = float(ap), epoch, result.as_dict()
            self.best_result = result
            self.best_evaluator, self.best_mask_evaluator = self._last_evaluator, self._last_mask_evaluator
        rng = all_gather_object(ckpt.capture_rng_state())  # every rank's generators, for an exact resume
        if is_main_process():
            state = self.checkpoint_state(epoch, rng)
            # last.pt goes last: a kill before it is written repeats this epoch on resume, which writes best/,
            # best_stage1.pt and the epoch's metrics.jsonl record again (read_metrics keeps the latest); written
            # first, a kill in between would leave them an epoch behind, or the record missing, for good
            if improved:
                if s.stage == 1:
                    ckpt.save_checkpoint(self.paths["stage1"], state)
                ckpt.save_best_model(self.ema.module, self.processor, self.paths["best"])
            lrs = current_lrs(self.optimizer)
            record = metrics_logger.log_epoch(
                epoch, train=train_stats, eval_metrics=result.as_dict() if result is not None else None,
                lr=list(lrs.values()), epoch_time=seconds,
                extra={"stage": s.stage, "best_AP": s.best_metric if s.best_epoch >= 0 else None,
                       "lr_groups": list(lrs)},  # names for the "lr" list (results.png's legend)
            )
            self.experiment.log_epoch(record)
            ckpt.save_checkpoint(self.paths["last"], state)
            if self._results_plot is not None:
                self._results_plot.update()  # not after every short epoch: drawing takes seconds (results_plot.py)
        kind = "mask " if result is not None and result.segm is not None else ""
        best = f" (best {kind}{format_ap(s.best_metric)} @ epoch {s.best_epoch + 1})" if s.best_epoch >= 0 else ""
        mask = "" if result is None or result.segm is None else f", mask AP {format_ap(result.segm.AP)}"
        ap = "" if result is None else f", AP {format_ap(result.AP)} AP50 {format_ap(result.AP50)}{mask}{best}"
        self.say(f"epoch {epoch + 1}/{self.hparams.epochs}: loss {train_stats.get('loss', math.nan):.4f}{ap}, "
                 f"{seconds:.1f} s" + (f", {count_noun(int(train_stats['skipped_steps']), 'step')} skipped"
                                       if train_stats.get("skipped_steps") else ""))

    def fit(self, on_epoch_end: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
        """Train from ``state.start_epoch`` to ``hparams.epochs``.

        Args:
            on_epoch_end: called with the epoch index after its checkpoint is written (e.g. to stop early).

        Returns:
            The ``metrics.jsonl`` records of the run (all epochs, including those before a resume; rank 0).
        """
        hp = self.hparams
        if self._pending_rng is not None:
            ckpt.restore_rng_state(self._pending_rng)
            self._pending_rng = None
        start = self.state.start_epoch
        self._take_snapshot("the start of the run" if start == 0 else f"the end of epoch {start} ({ckpt.LAST_NAME})")
        with MetricsLogger(self.output_dir) as metrics_logger:
            if is_main_process():
                self._results_plot = ResultsPlot(metrics_logger.path, self.output_dir / "results.png")
            epoch = self.state.start_epoch
            while epoch < hp.epochs:
                if hp.patience and self.state.stale_evals >= hp.patience:
                    # decided here, from the state last.pt holds, so a resumed run makes the same decision
                    if not self._out_of_patience(epoch):
                        break
                    epoch = hp.stop_epoch
                if epoch >= hp.stop_epoch and self.state.stage == 1:
                    self._enter_stage2(epoch)
                started = time.perf_counter()
                self.timer.start_epoch()
                try:
                    train_stats = self.train_one_epoch(epoch)
                except Diverged as diverged:
                    self._roll_back(diverged)
                    continue
                with self.timer.phase("evaluation"):
                    result = self.validate() if self._should_evaluate(epoch) else None
                if result is not None:
                    self._last_result = result
                with self.timer.phase("checkpoint + logs"):
                    self._end_of_epoch(epoch, train_stats, result, time.perf_counter() - started, metrics_logger)
                if self.profile:
                    seconds = self.timer.end_epoch()
                    self.say(breakdown_table(seconds, f"Time of epoch {epoch + 1}:"))
                    self.experiment.log_profile(epoch, seconds)
                self.state.start_epoch = epoch + 1
                self._take_snapshot(f"the end of epoch {epoch + 1} ({ckpt.LAST_NAME})")
                if on_epoch_end is not None:
                    on_epoch_end(epoch)
                epoch += 1
        self._finish()
        self._report_profile()
        return read_metrics(self.output_dir) if is_main_process() and (self.output_dir / "metrics.jsonl").exists() \
            else []

    @property
    def timer(self) -> PhaseTimer:
        """The phase timer of ``--profile`` (a disabled one otherwise), created on first use."""
        if self._timer is None:
            self._timer = PhaseTimer(self.profile, self.device)
            self._timer.watch_loss(self.train_model)
        return self._timer

    def _report_profile(self) -> None:
        """The run's totals per phase: printed, and kept in ``profile.json``."""
        if not self.profile or self._timer is None:
            return
        self._timer.close()
        self.say(breakdown_table(self._timer.total, "Time of the whole run (dfine train --profile):"))
        if is_main_process():
            save_profile(self._timer.total, self.output_dir / "profile.json")

    def _out_of_patience(self, epoch: int) -> bool:
        """Say what early stopping does at ``epoch``: True when stage 1 ends and stage 2 follows, False to stop."""
        hp, s = self.hparams, self.state
        why = f"No better AP in {count_noun(s.stale_evals, 'evaluation')} (patience {hp.patience})"
        if s.stage == 1 and hp.stop_epoch < hp.epochs:  # in stage 1, epoch <= stop_epoch
            first = hp.stop_epoch + 1
            self.say(f"{why}: stage 1 ends after epoch {epoch}; stage 2 runs epochs {first}..{hp.epochs}")
            return True
        self.say(f"{why}: stopping after epoch {epoch} of {hp.epochs}")
        return False

    def _finish(self) -> None:
        best = self.paths["best"]
        if self._results_plot is not None:  # rank 0's: the epochs since its last drawing
            self._results_plot.flush()
        # before a missing best/ is filled with the final EMA below, which is not the best epoch's weights
        if self.best_result is None and self.state.best_epoch >= 0 and self.val_loader is not None:
            reevaluate_best(self)
        if is_main_process() and not best.exists():
            # No evaluation happened (no validation split, eval_interval <= 0): the final EMA is the best we have.
            ckpt.save_best_model(self.ema.module, self.processor, best)
            self.say(f"No evaluation ran: {best} holds the final EMA weights")
        if self.best_result is not None:
            self.say(f"\nValidation of the best EMA weights (epoch {self.state.best_epoch + 1}):\n"
                     f"{self.best_result.table()}")
            write_val_report(self)
        elif self._last_result is not None:
            self.say(f"\nLast validation:\n{self._last_result.table()}")
        barrier()
