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

from dfine.engine.evaluator import EvalResult
from dfine.engine.resuming import (
    apply_resume_changes,
    check_resume_options,
    resume_checkpoint,
    resumed_amp,
    resumed_eval_interval,
)

logger = logging.getLogger("dfine")

DEFAULT_OUTPUT = Path("runs/train")
"""The run folder of :func:`train` when ``output`` is not given."""


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


def training_device(device: str | torch.device, local_rank: int) -> torch.device:
    """``auto`` and ``cuda`` -> this process' GPU (``cuda:<local rank>``) when CUDA is available; otherwise as
    :func:`dfine.utils.device.resolve_device` (``auto`` -> CPU, an unavailable CUDA device -> one-line error)."""
    from dfine.utils.device import resolve_device

    if str(device) in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return resolve_device(device)


def amp_dtype_for(device: torch.device, amp: bool | None) -> torch.dtype | None:
    """The autocast dtype: None (off) on the CPU unless asked; bf16 where the GPU supports it, else fp16.

    AMP is on by default on CUDA (the recipe trains with it) and off on the CPU, where bf16 autocast is slower on
    most processors and gains nothing in memory that matters there. bf16 has fp32's range, so it needs no loss
    scaling and avoids the fp16 overflows behind many NaN reports of the original (SPEC Part B §9 item 9).
    """
    if amp is None:
        amp = device.type == "cuda"
    if not amp:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def _split_overrides(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
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
    eval_interval: int = 1,
    progress: bool = True,
    sync_bn: bool = False,
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
        eval_interval: evaluate the EMA weights every this many epochs (0: never; ``best/`` is the final EMA).
        progress: progress bars.
        sync_bn: under torchrun on CUDA, convert trainable batch norms to SyncBatchNorm.
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
        return _train(data=data, model=model, epochs=epochs, batch_size=batch_size, image_size=image_size,
                      output=output, device=device, resume=resume, amp=amp, workers=workers, seed=seed,
                      pretrained_backbone=pretrained_backbone, lr=lr, eval_interval=eval_interval,
                      progress=progress, sync_bn=sync_bn, overrides=overrides, local_rank=local_rank,
                      world_size=world_size)
    finally:
        if owns_group and world_size > 1:
            cleanup_distributed()


def _check_workers(workers: int | None) -> None:
    """A bad worker count only fails when the data loader starts, after the data check: refuse it first."""
    from dfine.errors import ConfigError

    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 0):
        raise ConfigError(f"the number of data-loading workers must be an integer >= 0, got {workers!r}")


def _check_counts(workers: int | None, seed: int) -> None:
    """Options that only fail deep inside a run (a worker count, the seed) are checked before anything starts."""
    from dfine.utils.checks import check_seed

    _check_workers(workers)
    check_seed(seed)


def _check_model(model: Any, trainable: bool) -> None:
    """A ConfigError unless ``model`` is a path-like name or a model object (for training: a
    ``DFineForObjectDetection``, whose weights and config can be copied)."""
    from dfine.errors import ConfigError
    from dfine.model import DFineForObjectDetection
    from dfine.utils.checks import check_path, shown

    if isinstance(model, DFineForObjectDetection) or (isinstance(model, nn.Module) and not trainable):
        return
    what = "a preset name, hub id, folder or file"
    if isinstance(model, nn.Module):  # a deploy-form or compiled copy: other parameters, or a wrapper
        raise ConfigError(f"model must be {what} or a DFineForObjectDetection, got {shown(model)}: pass the "
                          "DFineForObjectDetection it was made from, or its folder (model.save_pretrained(folder))")
    check_path(model, "model", what + (" or a DFineForObjectDetection" if trainable else " or a model"))


def _check_size(image_size: Any, name: str = "image_size", optional: bool = False) -> None:
    """``image_size`` as :func:`~dfine.config.image_size.image_size_hw` takes it: a multiple of 32 or an (H, W) pair of
    them (or None when ``optional``); a wrong type is a ConfigError naming the argument, not a TypeError."""
    from dfine.config.image_size import image_size_hw
    from dfine.errors import ConfigError
    from dfine.utils.checks import check_integer, validate_image_size

    if image_size is None:
        if not optional:
            raise ConfigError(f"{name} must be a positive multiple of 32, got None")
    elif isinstance(image_size, tuple | list) and len(image_size) == 2:
        for side in image_size:
            check_integer(side, f"each side of {name}", 1)
        image_size_hw(image_size)
    else:
        validate_image_size(image_size, name)


def _check_train_arguments(args: dict[str, Any]) -> None:
    """Every named argument of :func:`train`, before anything slow starts (the data check, a download)."""
    from dfine.utils.checks import check_flag, check_integer, check_number, check_output_folder, check_path
    from dfine.utils.device import check_device

    check_path(args["data"], "data", "a data YAML or data set folder")
    _check_model(args["model"], trainable=True)
    check_integer(args["epochs"], "epochs", 1, optional=True)
    check_integer(args["batch_size"], "batch_size", 1, optional=True)
    _check_size(args["image_size"])
    if args["output"] is not None:
        check_output_folder(args["output"])
    check_device(args["device"])
    if not isinstance(args["resume"], bool):
        check_path(args["resume"], "resume", "True, False or a checkpoint path")
    check_flag(args["amp"], "amp", optional=True)
    for flag in ("pretrained_backbone", "progress", "sync_bn"):
        check_flag(args[flag], flag)
    check_number(args["lr"], "lr", low=0.0, low_open=True, optional=True)
    check_integer(args["eval_interval"], "eval_interval", 0)
    _check_counts(args["workers"], args["seed"])


def _train(*, data: str | Path, model: str | Path | nn.Module, epochs: int | None, batch_size: int | None,
           image_size: int, output: str | Path | None, device: str, resume: bool | str | Path, amp: bool | None,
           workers: int | None, seed: int, pretrained_backbone: bool, lr: float | None, eval_interval: int,
           progress: bool, sync_bn: bool, overrides: dict[str, Any], local_rank: int, world_size: int) -> TrainResult:
    from dfine.config import DFineConfig
    from dfine.config.image_size import check_image_size, image_size_hw
    from dfine.data import EvalTransforms, TrainTransforms, check_dataset, default_workers, resolve_dataset
    from dfine.data.holdout import hold_out_validation
    from dfine.engine import checkpoint as ckpt
    from dfine.engine.build import ModelReport, build_loaders, build_training_model, check_config_overrides
    from dfine.engine.distributed import is_main_process, seed_everything
    from dfine.engine.ema import ModelEMA
    from dfine.engine.hparams import Hyperparameters, check_overrides, count_noun, resolve_hyperparameters
    from dfine.engine.optim import WarmupConstantLR, build_optimizer, freeze_stem
    from dfine.engine.trainer import Trainer
    from dfine.errors import DFineError
    from dfine.model import DFineForObjectDetection
    from dfine.processing.processor import DFineImageProcessor
    from dfine.utils.files import atomic_write_text

    main = is_main_process()
    say = print if main else (lambda *a, **k: None)
    # options first: a typo must not wait for the data check of a large data set (locals() holds the arguments here)
    _check_train_arguments(locals())
    dev = training_device(device, local_rank)  # cheap, and a missing GPU should not wait for the data check either
    hp_overrides, config_overrides = _split_overrides(overrides)
    hp_overrides, config_overrides = check_overrides(hp_overrides), check_config_overrides(config_overrides)
    overrides = {**hp_overrides, **config_overrides}
    if workers is None:
        workers = default_workers()
    output_dir = Path(output if output is not None else DEFAULT_OUTPUT).expanduser()
    resume_from, state = resume_checkpoint(resume, output_dir)
    if resume_from is not None:
        # The run's files (metrics.jsonl, best/, best_stage1.pt) live next to its checkpoint: continuing them in
        # another folder would split one run over two, so the checkpoint's folder wins and the user is told.
        if main and output is not None and output_dir.resolve() != resume_from.parent.resolve():
            logger.warning("resuming: output=%s ignored, the checkpoint's folder %s is kept", output,
                           resume_from.parent)
        output_dir = resume_from.parent
        if main:
            ckpt.recover_best_model(output_dir / ckpt.BEST_DIR_NAME)
        saved_seed = int(state.get("extra", {}).get("seed", seed))
        if main and seed not in (0, saved_seed):  # 0 is the default, not a choice
            logger.warning("resuming: seed=%s ignored, the checkpoint's %s is kept", seed, saved_seed)
        seed = saved_seed
    elif (output_dir / ckpt.LAST_NAME).exists():
        raise DFineError(f"{output_dir} already holds a training run (last.pt): pass resume=True (--resume) to "
                         "continue it, or choose another output folder")
    seed_everything(seed)

    # -- data: checked first, so that problems surface before anything slow happens
    spec = resolve_dataset(data)
    _check_output_outside_images(output_dir, spec)
    val_split = (state["hparams"] if state is not None else hp_overrides).get("val_split", 0.0)
    if val_split:
        spec = hold_out_validation(spec, val_split)
    data_source = str(Path(spec.source).resolve())  # recorded in last.pt; a resume compares it
    splits = [s for s in ("train", "val") if s in spec.splits]
    if "train" not in splits:
        raise DFineError(f"{spec.source}: the data set has no 'train' split")
    report = check_dataset(spec, splits, progress=progress and main)
    say(report.summary())
    class_names = list(spec.names)
    if "val" not in spec.splits:
        logger.warning("%s has no validation split: training without evaluation; best/ will hold the final EMA "
                       "weights (val_split=0.1 / --val-split 0.1 holds a tenth of the training images out for "
                       "it)", spec.source)
    num_train = len(spec.index("train").records)

    # -- model and hyper-parameters
    if state is not None:
        if list(state.get("class_names", [])) != class_names:
            raise DFineError(f"{resume_from} was trained on classes {state.get('class_names')}, but {data} has "
                             f"{class_names}: resume with the same data set")
        hp = Hyperparameters.from_dict(state["hparams"])
        check_resume_options(state, hp, overrides, batch_size=batch_size, lr=lr, image_size=image_size)
        apply_resume_changes(hp, overrides)
        trained_on = state.get("extra", {}).get("data")
        if trained_on is not None and trained_on != data_source:
            # same classes, so it may be the same data moved; if not, best/ compares AP across validation sets
            hp.notes.append(f"resuming on {spec.source}, but the run so far trained on {trained_on}: the best epoch "
                            "is chosen across both validation sets")
        net = DFineForObjectDetection(DFineConfig.from_dict(state["config"])).train()
        if epochs is not None and epochs != hp.epochs:
            hp.notes.append(f"epochs changed from {hp.epochs} to {epochs} on resume")
            hp.epochs = epochs
        eval_interval = resumed_eval_interval(state, eval_interval, hp.notes)
        amp = resumed_amp(state, amp, amp_dtype_for(dev, None) is not None, hp.notes)
        done = int(state["epoch"]) + 1
        if done >= hp.epochs:  # nothing will train: say so rather than print a summary that looks like a run
            logger.warning("resuming a run that already finished its %d of %d epochs: nothing to train (pass a "
                           "larger epochs=N / --epochs N to continue it)", done, hp.epochs)
        if hp.freeze_backbone_norm:
            freeze_stem(net)
        image_hw = tuple(int(v) for v in state["image_size"])
        model_report = ModelReport(str(resume_from), hp.size, hp.fine_tune, "from the checkpoint", resumed=True,
                                   notes=[f"resuming after epoch {int(state['epoch']) + 1}"])
    else:
        source = model if isinstance(model, nn.Module) else str(model)
        net, model_report = build_training_model(source, class_names, pretrained_backbone=pretrained_backbone,
                                                 config_overrides=config_overrides)
        net.config.dataset_category_ids = spec.category_ids  # predictions can then name the data set's own ids
        hp = resolve_hyperparameters(model_report.size, num_train_images=num_train, batch_size=batch_size,
                                     epochs=epochs, lr=lr, fine_tune=model_report.fine_tune, world_size=world_size,
                                     overrides=hp_overrides)
        image_hw = image_size_hw(image_size)
        net.config.training_image_size = image_hw  # the size dfine.val and deploy() use for this model object
    check_image_size(net.config, image_hw)

    # -- data sets and loaders
    train_set = spec.build("train", TrainTransforms(image_hw, stop_epoch=hp.stop_epoch))
    val_set = spec.build("val", EvalTransforms(image_hw)) if "val" in spec.splits else None
    train_loader, val_loader = build_loaders(
        train_set, val_set, batch_size=hp.batch_size, image_size=image_hw, base_size_repeat=hp.base_size_repeat,
        stop_epoch=hp.stop_epoch, workers=workers, seed=seed, world_size=world_size, pin_memory=dev.type == "cuda")

    # -- modules: SyncBN before the optimizer (it replaces modules), EMA after DDP (which syncs rank 0's weights)
    net.to(dev)
    train_model: nn.Module = net
    if world_size > 1:
        if sync_bn and dev.type == "cuda":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        elif sync_bn:
            logger.warning("sync_bn needs CUDA devices: ignored")
        train_model = nn.parallel.DistributedDataParallel(
            net, device_ids=[dev.index] if dev.type == "cuda" else None, find_unused_parameters=False)
    optimizer = build_optimizer(net, lr=hp.lr, backbone_lr=hp.backbone_lr, weight_decay=hp.weight_decay,
                                no_decay_bias=hp.no_decay_bias, backbone_norm_decay=hp.backbone_norm_decay,
                                betas=hp.betas)
    scheduler = WarmupConstantLR(optimizer, hp.warmup_iters)
    amp_dtype = amp_dtype_for(dev, amp)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp_dtype == torch.float16)
    ema = ModelEMA(net, hp.ema_decay, hp.ema_warmups)
    processor = DFineImageProcessor(size={"height": image_hw[0], "width": image_hw[1]})

    trainer = Trainer(model=net, train_model=train_model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                      ema=ema, hparams=hp, train_loader=train_loader, val_loader=val_loader,
                      val_ground_truth=val_set.coco_ground_truth() if val_set is not None else None,
                      class_names=class_names, processor=processor, output_dir=output_dir, device=dev,
                      amp_dtype=amp_dtype, image_size=image_hw, seed=seed, eval_interval=eval_interval,
                      progress=progress, data_source=data_source)
    if state is not None:
        trainer.load_checkpoint_state(state)
        del state
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
        processor.save_pretrained(output_dir)  # so that `dfine val --model <run>/last.pt` resizes like training
        atomic_write_text(output_dir / "hparams.json", json.dumps(hp.to_dict(), indent=2) + "\n")
    precision = "fp32" if amp_dtype is None else str(amp_dtype).replace("torch.", "") + " autocast"
    say(model_report.summary())
    say(hp.summary())
    if hp.patience and (val_set is None or eval_interval <= 0):
        logger.warning("patience=%d has nothing to count without evaluations (%s): the run trains for %s",
                       hp.patience, "no validation split" if val_set is None else "eval_interval 0",
                       count_noun(hp.epochs, "epoch"))
    say(f"Device: {dev} x {world_size} process(es), {precision}; image size {image_hw[0]}x{image_hw[1]}; "
        f"{count_noun(len(train_loader), 'step')} per epoch; output: {output_dir}")

    history = trainer.fit()
    s = trainer.state
    return TrainResult(best_model=output_dir / ckpt.BEST_DIR_NAME, last_checkpoint=output_dir / ckpt.LAST_NAME,
                       metrics=dict(s.best_eval or {}), output_dir=output_dir, history=history)


def _check_output_outside_images(output: Path, spec: Any) -> None:
    """Refuse an output folder (a training run's, or ``val --output``) inside a YOLO image folder: folders are
    searched for images, so the pictures written there (plots, training batches, reports) would join the data set
    the next time it is read."""
    from dfine.errors import DFineError

    if spec.format != "yolo":
        return  # a COCO file lists its images: other files beside them are never read
    target = output.resolve()
    for split in spec.splits.values():
        for folder in split.images:
            if folder.is_dir() and target.is_relative_to(folder.resolve()):
                raise DFineError(f"{output}: inside the image folder {folder} of {spec.source}, where the pictures "
                                 "written there would be read as images of the data set: choose a folder outside it")


# ---------------------------------------------------------------------------------------------------- val
def _check_val_arguments(model: Any, data: Any, split: Any, batch_size: Any, device: Any, image_size: Any,
                         workers: Any, progress: Any, dtype: Any, half_head: Any, output: Any = None,
                         score_threshold: Any = 0.5, val_split: Any = 0.0) -> torch.dtype | None:
    """Every argument of :func:`val`, before the data check and the model load (which can be a download); returns
    ``dtype`` as a torch dtype."""
    from dfine.errors import ConfigError
    from dfine.utils.checks import check_flag, check_integer, check_number, check_output_folder, check_path, shown
    from dfine.utils.device import check_device

    if output is not None:
        check_output_folder(output)
    check_number(score_threshold, "score_threshold", low=0.0, high=1.0)
    check_number(val_split, "val_split", low=0.0, high=1.0)

    _check_model(model, trainable=False)
    check_path(data, "data", "a data YAML or data set folder")
    if not isinstance(split, str):
        raise ConfigError(f"split must be a split name such as 'val', got {shown(split)}")
    check_integer(batch_size, "batch_size", 1)
    check_device(device)
    _check_size(image_size, optional=True)
    _check_workers(workers)
    check_flag(progress, "progress")
    check_flag(half_head, "half_head")
    if dtype is not None:
        from dfine.model.deploy.fast import resolve_dtype

        dtype = resolve_dtype(dtype)
    if half_head and dtype not in (torch.float16, torch.bfloat16):
        raise ConfigError("half_head (--half-head) runs the head in the body's half precision: it needs dtype "
                          "float16 or bfloat16 (--half or --bf16)")
    return dtype


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
    """COCO box metrics of a model on one split of a data set, preprocessed exactly like inference.

    Args:
        model: anything ``from_pretrained`` accepts, or a loaded ``DFineForObjectDetection``.
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
            category ids, the best 100 per image), ``per_class_ap.png``, ``pr_curve.png`` and
            ``confusion_matrix.png`` to (:func:`dfine.engine.analysis.write_report`).
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
    from dfine.model import DFineForObjectDetection
    from dfine.processing.input_size import model_input_size
    from dfine.utils.device import resolve_device

    dtype = _check_val_arguments(model, data, split, batch_size, device, image_size, workers, progress, dtype,
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
        _check_output_outside_images(Path(output).expanduser(), spec)
    check_dataset(spec, [split], progress=progress)
    net = model if isinstance(model, nn.Module) else DFineForObjectDetection.from_pretrained(model)
    if decoder_layers is not None:
        from dfine.model.depth import set_decoder_layers

        # a caller's model keeps its own depth
        net = set_decoder_layers(copy.deepcopy(net) if net is model else net, decoder_layers)
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
                                     head_dtype=None if half_head else torch.float32)
    from dfine.engine.evaluator import CocoEvaluator

    ground_truth = dataset.coco_ground_truth()
    evaluator = CocoEvaluator(ground_truth, names)
    result = evaluate(net, loader, ground_truth, names, dev, None, progress=progress, evaluator=evaluator)
    if output is not None:
        from dfine.engine.analysis import write_report

        write_report(output, result, evaluator, dataset.index.categories.ids, names, score_threshold)
    return result
