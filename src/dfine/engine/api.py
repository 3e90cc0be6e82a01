"""``dfine.train`` and ``dfine.val``: the full D-FINE recipe on the user's data, in one call each.

::

    import dfine
    result = dfine.train("my_data/data.yaml", model="dfine-s-coco", epochs=50, batch_size=16)
    print(result.best_model, result.metrics["AP"])
    metrics = dfine.val(result.best_model, "my_data/data.yaml")

Under ``torchrun --nproc_per_node N`` the same ``train(...)`` call runs distributed data parallel: the batch size is
the total over all processes, every rank loads its share, only rank 0 writes files and prints.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfine.data import default_workers
from dfine.engine import checkpoint as ckpt
from dfine.engine.arguments import TrainOptions, check_val_arguments
from dfine.engine.evaluator import EvalResult
from dfine.engine.setup import (
    build_optimization,
    check_output_outside_images,
    prepare_data,
    prepare_model,
    start_run,
    training_device,
)

logger = logging.getLogger("dfine")


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes:
        best_model: folder with the best EMA weights (``from_pretrained`` / ``dfine predict --model`` load it).
        last_checkpoint: ``last.pt``, the full training state (``resume=`` continues from it).
        metrics: the best epoch's COCO metrics (``AP``, ``AP50``, ..., ``per_class_AP``); empty without evaluation.
        output_dir: the run folder (``metrics.jsonl``, ``results.png``, ``tensorboard/``, ``hparams.json``).
        history: one ``metrics.jsonl`` record per epoch.
    """

    best_model: Path
    last_checkpoint: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    output_dir: Path = Path(".")
    history: list[dict[str, Any]] = field(default_factory=list)


def _split_overrides(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword overrides of :func:`train` as (hyper-parameters, model config fields)."""
    from dfine.engine.hparams import Hyperparameters

    names = Hyperparameters.field_names()
    return ({k: v for k, v in overrides.items() if k in names},
            {k: v for k, v in overrides.items() if k not in names})


def train(
    data: str | Path,
    model: str | Path | nn.Module = "dfine-n-coco",
    epochs: int | None = None,
    batch_size: int | None = None,
    image_size: int = 640,
    output: str | Path | None = None,
    device: str = "auto",
    resume: bool | str | Path = False,
    amp: bool | None = None,
    workers: int | None = None,
    seed: int = 0,
    pretrained_backbone: bool = True,
    lr: float | None = None,
    eval_interval: int | None = None,
    progress: bool = True,
    sync_bn: bool = False,
    profile: bool = False,
    recipe: str | None = None,
    logger: str | list[str] | tuple[str, ...] | None = None,
    log_model: bool = False,
    task: str | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train D-FINE on a data set with the original recipe, scaled to this run (printed at the start).

    Args:
        data: the data set (a data YAML, a COCO or Roboflow folder, a YOLO ``data.yaml``; see
            :func:`dfine.data.resolve_dataset`). It is checked first and the check's summary printed.
        model: a preset name (``"dfine-s-coco"``: that architecture trained from scratch, the backbone from
            ImageNet unless ``pretrained_backbone=False``) or anything ``from_pretrained`` accepts (a hub id such as
            ``"ustc-community/dfine-small-coco"``, a folder, a file), or a ``DFineForObjectDetection`` already in
            memory: those weights are fine-tuned, with new class heads when the data set's classes differ (a model
            object is copied, not changed; ``last.pt`` holds everything a resumed run needs).
        epochs: None picks a default from the recipe and the data set size.
        batch_size: total images per step over all processes; None uses the recipe's per-GPU batch per process.
        image_size: square training and validation size (multiple of 32).
        output: run folder (None: ``runs/train``). A folder already holding a run (``last.pt``) is refused unless
            resuming.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        resume: True continues ``<output>/last.pt``; a path continues that checkpoint (its folder becomes the
            output; a different ``output`` given with it is ignored, with a warning). The checkpoint's model,
            hyper-parameters, image size and seed are used, and the run continues exactly where it stopped (same
            data order and augmentations).
        amp: mixed precision; None = on for CUDA (bf16 where supported, else fp16 with loss scaling), off on CPU.
        workers: data-loading processes per training process; None: 4, or fewer when this process may use fewer
            CPU cores.
        seed: seed of the initial weights, data order and augmentations (0 .. 2**63 - 1).
        pretrained_backbone: presets only: start the backbone from ImageNet weights (needs the network once).
        lr: base learning rate, taken as given (the backbone LR keeps the recipe's ratio); None scales the recipe's.
        eval_interval: evaluate the EMA weights every this many epochs (0: never; ``best/`` is the final EMA); None
            chooses from the split sizes (:func:`~dfine.engine.hparams.default_eval_interval`; 1 on COCO-sized data)
            and says so, or keeps a resumed run's.
        progress: progress bars.
        sync_bn: under torchrun on CUDA, convert trainable batch norms to SyncBatchNorm.
        recipe: ``"dfine"`` (the original recipe; the default) or ``"deim"``: DEIM's Dense O2O (mosaic, mixup),
            Matchability-Aware Loss and flat-cosine schedule, which converge in fewer epochs
            (:mod:`dfine.engine.recipes`). A resumed run keeps its own.
        profile: print where each epoch's time goes (data wait, forward, loss + matching, backward, optimizer,
            EMA, evaluation, writes; :mod:`dfine.engine.profiling`) and keep the run's totals in ``profile.json``.
        logger: experiment loggers besides ``metrics.jsonl``: ``"wandb"``, ``"mlflow"``, ``"tensorboard"``, a list
            or a comma-separated string of them, or ``"none"`` (:mod:`dfine.engine.experiment_loggers`). W&B logs
            offline when there is no W&B login; MLflow logs to ``MLFLOW_TRACKING_URI``, else ``./mlruns``.
            TensorBoard is on whenever installed (naming it makes it required). None: on a resume, the loggers the
            run used, continuing their runs; else none.
        log_model: also upload the ``best/`` folder to W&B / MLflow at the end (off: a large model is a slow upload).
        task: ``"segment"`` trains instance segmentation (a ``DFineForInstanceSegmentation``; a detection checkpoint
            or preset gets a fresh mask branch; the data set needs a polygon or mask for every object), ``"detect"``
            boxes only; None (default): the model's own (:mod:`dfine.engine.task`). Segmentation runs report mask AP
            beside box AP (``metrics["segm"]``) and keep the epoch of the best mask AP in ``best/``.
        **overrides: hyper-parameters (:class:`~dfine.engine.hparams.Hyperparameters` fields, e.g.
            ``stop_epoch=0``, ``warmup_iters=100``) or model config fields (e.g. ``num_queries=100``,
            ``num_denoising=0``).

    Returns:
        A :class:`TrainResult`.

    Raises:
        ConfigError: an argument of the wrong type or out of range (checked before the data is read).
        DFineError: bad data, model, options or checkpoint (one-line message); or a training run that diverges.
    """
    from dfine.engine.distributed import cleanup_distributed, init_distributed, is_distributed

    owns_group = not is_distributed()
    rank, local_rank, world_size = init_distributed()
    try:
        options = TrainOptions(data=data, model=model, epochs=epochs, batch_size=batch_size, image_size=image_size,
                               output=output, device=device, resume=resume, amp=amp, workers=workers, seed=seed,
                               pretrained_backbone=pretrained_backbone, lr=lr, eval_interval=eval_interval,
                               progress=progress, sync_bn=sync_bn, profile=profile, recipe=recipe,
                               logger=logger, log_model=log_model, overrides=dict(overrides), task=task)
        return _train(options, local_rank, world_size)
    finally:
        if owns_group and world_size > 1:
            cleanup_distributed()


def _train(options: TrainOptions, local_rank: int, world_size: int) -> TrainResult:
    from dfine.data import EvalTransforms, TrainTransforms
    from dfine.data.mosaic import DenseO2OPolicy
    from dfine.engine.build import build_loaders, check_config_overrides
    from dfine.engine.distributed import is_main_process, seed_everything
    from dfine.engine.experiment_loggers.choices import check_logger_names, resumed_logger_names
    from dfine.engine.experiment_loggers.session import experiment_log, saved_runs
    from dfine.engine.hparams import check_overrides, count_noun
    from dfine.engine.task import trains_segmentation
    from dfine.engine.trainer import Trainer
    from dfine.processing.processor import DFineImageProcessor

    options.check()  # a typo must not wait for the data check of a large data set
    device = training_device(options.device, local_rank)  # a missing GPU should not wait for the data check either
    hp_overrides, config_overrides = _split_overrides(options.overrides)
    hp_overrides, config_overrides = check_overrides(hp_overrides), check_config_overrides(config_overrides)
    run = start_run(options)
    previous_runs = saved_runs(run.state)  # the logger runs to continue (read before run.state is dropped)
    loggers = resumed_logger_names(check_logger_names(options.logger), previous_runs)
    seed_everything(run.seed)
    val_split = (run.state["hparams"] if run.state is not None else hp_overrides).get("val_split", 0.0)
    segment = trains_segmentation(options.task, options.model, run.state["config"] if run.state else None)
    if run.state is not None and options.task is not None and (options.task == "segment") != segment:
        logger.warning("resuming: task=%s ignored, the run continues as %s", options.task,
                       "segmentation" if segment else "detection")
    data = prepare_data(options, run, val_split, masks=segment)
    plan = prepare_model(options, run, data, device, world_size, hp_overrides, config_overrides, segment=segment)
    hp, image_hw = plan.hparams, plan.image_hw

    dense_o2o = DenseO2OPolicy(*hp.dense_o2o_epochs, mosaic_prob=hp.mosaic_prob, mixup_prob=hp.mixup_prob)
    train_set = data.spec.build("train", TrainTransforms(image_hw, stop_epoch=hp.stop_epoch, seed=run.seed,
                                                         strong_start=hp.strong_aug_start, dense_o2o=dense_o2o),
                                masks=segment)
    val_set = data.spec.build("val", EvalTransforms(image_hw)) if "val" in data.spec.splits else None
    workers = options.workers if options.workers is not None else default_workers()
    train_loader, val_loader = build_loaders(
        train_set, val_set, batch_size=hp.batch_size, image_size=image_hw, base_size_repeat=hp.base_size_repeat,
        stop_epoch=hp.stop_epoch, workers=workers, seed=run.seed, world_size=world_size,
        pin_memory=device.type == "cuda", mixup=dense_o2o)
    parts = build_optimization(plan.net, hp, device, world_size, options.sync_bn, plan.amp, len(train_loader))
    processor = DFineImageProcessor(size={"height": image_hw[0], "width": image_hw[1]})
    trainer = Trainer(model=parts.model, train_model=parts.train_model, optimizer=parts.optimizer,
                      scheduler=parts.scheduler, scaler=parts.scaler, ema=parts.ema, hparams=hp,
                      train_loader=train_loader, val_loader=val_loader,
                      val_ground_truth=val_set.coco_ground_truth() if val_set is not None else None,
                      class_names=data.class_names, processor=processor, output_dir=run.output_dir, device=device,
                      amp_dtype=parts.amp_dtype, image_size=image_hw, seed=run.seed, eval_interval=plan.eval_interval,
                      progress=options.progress, data_source=data.source, profile=options.profile)
    if run.state is not None:
        trainer.load_checkpoint_state(run.state)
        run.state = None  # the optimizer state is large: keep one copy
    if is_main_process():
        _write_run_files(run.output_dir, processor, hp)
        precision = "fp32" if parts.amp_dtype is None else str(parts.amp_dtype).replace("torch.", "") + " autocast"
        print(plan.report.summary())
        print(hp.summary())
        if hp.patience and (val_set is None or plan.eval_interval <= 0):
            logger.warning("patience=%d has nothing to count without evaluations (%s): the run trains for %s",
                           hp.patience, "no validation split" if val_set is None else "eval_interval 0",
                           count_noun(hp.epochs, "epoch"))
        print(f"Device: {device} x {world_size} process(es), {precision}; image size {image_hw[0]}x{image_hw[1]}; "
              f"{count_noun(len(train_loader), 'step')} per epoch; output: {run.output_dir}")

    with experiment_log(loggers, trainer, previous_runs, options.log_model):
        history = trainer.fit()
    return TrainResult(best_model=run.output_dir / ckpt.BEST_DIR_NAME,
                       last_checkpoint=run.output_dir / ckpt.LAST_NAME,
                       metrics=dict(trainer.state.best_eval or {}), output_dir=run.output_dir, history=history)


def _write_run_files(output_dir: Path, processor: Any, hp: Any) -> None:
    """The run folder's ``preprocessor_config.json`` (so that ``dfine val --model <run>/last.pt`` resizes like
    training) and ``hparams.json``."""
    from dfine.utils.files import atomic_write_text

    output_dir.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(output_dir)
    atomic_write_text(output_dir / "hparams.json", json.dumps(hp.to_dict(), indent=2) + "\n")


def val(
    model: str | Path | nn.Module,
    data: str | Path,
    split: str = "val",
    batch_size: int = 8,
    device: str = "auto",
    image_size: int | None = None,
    workers: int | None = None,
    progress: bool = False,
    dtype: str | torch.dtype | None = None,
    half_head: bool = False,
    output: str | Path | None = None,
    score_threshold: float = 0.5,
    val_split: float = 0.0,
    decoder_layers: int | None = None,
) -> EvalResult:
    """COCO box metrics of a model on one split of a data set, preprocessed exactly like inference; for a
    segmentation model on a data set with masks, COCO mask metrics too (the result's ``segm``).

    Args:
        model: anything ``from_pretrained`` accepts (a segmentation checkpoint loads as
            ``DFineForInstanceSegmentation``), or a loaded ``DFineForObjectDetection`` /
            ``DFineForInstanceSegmentation``.
        data: the data set (as for :func:`train`).
        split: ``val``, ``train`` or ``test``.
        batch_size: images per forward pass.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        image_size: square input size; None uses the model's ``preprocessor_config.json``, else 640.
        workers: data-loading processes (None: :func:`~dfine.data.default_workers`).
        progress: show a progress bar (on stderr).
        dtype: None evaluates the model as loaded; ``"float16"`` (CUDA), ``"bfloat16"`` or ``"float32"``
            evaluate the fast inference form that ``dfine predict --half`` runs
            (:func:`~dfine.model.deploy.fast.optimize_for_inference`: deploy form, this body precision, float32 head):
            what a deployed model scores.
        half_head: with ``dtype`` float16 or bfloat16, run the head in that precision too (``--half-head``).
        output: a folder to also write ``metrics.json``, ``predictions.json`` (COCO results in the data set's
            category ids, the best 100 per image), ``per_class_ap.png``, ``pr_curve.png``, ``confusion_matrix.png``
            and ``uncertainty.json`` / ``.png`` to (:func:`dfine.engine.analysis.write_report`).
        score_threshold: the score from which a detection counts in the confusion matrix.
        val_split: for a data set without a validation split, the fraction of its training images that
            ``train(val_split=...)`` held out: ``split="val"`` evaluates those same images (0: none).
        decoder_layers: evaluate with only the first K decoder layers (:mod:`dfine.model.depth`): what
            ``dfine predict --decoder-layers K`` costs in accuracy (a given model is not changed).

    Returns:
        The :class:`~dfine.engine.evaluator.EvalResult` (``.AP``, ``.table()``, ``.as_dict()``; ``result["AP"]``
        reads it by the names of ``as_dict()``, as :attr:`TrainResult.metrics`).

    Raises:
        ConfigError: an argument of the wrong type or out of range (checked before the data or model is read).
        DFineError: unreadable data, a missing split, or a model whose class count differs from the data set's
            (data problems are reported first: a data set whose classes cannot be read has none to compare).
    """
    from dfine.config.image_size import check_image_size, image_size_hw
    from dfine.data import BatchCollator, EvalTransforms, build_dataloader, check_dataset, resolve_dataset
    from dfine.data.holdout import hold_out_validation
    from dfine.engine.validate import evaluate
    from dfine.errors import DFineError
    from dfine.model import load_model
    from dfine.processing.input_size import model_input_size
    from dfine.utils.device import resolve_device

    dtype = check_val_arguments(model, data, split, batch_size, device, image_size, workers, progress, dtype,
                                 half_head, output, score_threshold, val_split)
    dev = resolve_device(device)  # cheap, and a missing GPU should not wait for the data check
    if dtype == torch.float16 and dev.type != "cuda":
        raise DFineError("float16 (--half) needs a CUDA device; on the CPU use bfloat16 (--bf16)")
    spec = resolve_dataset(data)
    if val_split:
        spec = hold_out_validation(spec, val_split)
    if split not in spec.splits:
        hint = " (a data set without one: val_split=0.1 / --val-split 0.1 as in training)" if split == "val" else ""
        raise DFineError(f"{spec.source}: no '{split}' split (found: {', '.join(spec.splits)}){hint}")
    if output is not None:
        check_output_outside_images(Path(output).expanduser(), spec)
    check_dataset(spec, [split], progress=progress)
    net = model if isinstance(model, nn.Module) else load_model(model)
    if decoder_layers is not None:
        from dfine.model.depth import set_decoder_layers

        # a caller's model keeps its own depth
        net = set_decoder_layers(copy.deepcopy(net) if net is model else net, decoder_layers)
    if getattr(net.config, "use_mask_head", False):
        if spec.index(split).has_masks:  # masks are scored: every object needs a usable one
            spec.index(split).raise_if_mask_issues()
        else:
            logger.warning("%s has no instance masks: the segmentation model is scored on its boxes only", spec.source)
    names = list(spec.names)
    num_labels = net.config.num_labels
    if num_labels != len(names):
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise DFineError(f"the model has {num_labels} classes but the data set {spec.source} has {len(names)} "
                         f"({shown}): evaluate a model trained on these classes")
    if net.config.class_names != names:
        logger.info("class names differ between the model and the data set; the data set's names are shown")
    size = image_size_hw(image_size) if image_size is not None else (
        model_input_size(model) if not isinstance(model, nn.Module) else (net.config.training_image_size or (640, 640)))
    check_image_size(net.config, size, training=False)
    dataset = spec.build(split, EvalTransforms(size))
    loader = build_dataloader(dataset, batch_size, shuffle=False, workers=workers, collate_fn=BatchCollator(size))
    net.to(dev)
    if dtype is not None:  # what a deployed model scores: the same path as predict --half
        from dfine.model.deploy.fast import optimize_for_inference

        net = optimize_for_inference(net, dtype=dtype, device=dev, image_size=size,
                                     head_dtype=None if half_head else torch.float32, uncertainty=output is not None)
    from dfine.engine.evaluator import CocoEvaluator
    from dfine.engine.mask_eval import new_mask_evaluator

    ground_truth = dataset.coco_ground_truth()
    evaluator = CocoEvaluator(ground_truth, names)
    # made here rather than by evaluate(), so that the report can write the instances' masks
    mask_evaluator = new_mask_evaluator(net, ground_truth, names)
    result = evaluate(net, loader, ground_truth, names, dev, progress=progress, evaluator=evaluator,
                      uncertainty=output is not None, mask_evaluator=mask_evaluator)
    if output is not None:
        from dfine.engine.analysis import write_report

        write_report(output, result, evaluator, dataset.index.categories.ids, names, score_threshold,
                     mask_evaluator=mask_evaluator)
    return result
