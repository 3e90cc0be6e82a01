"""The steps that set a training run up, in the order :func:`dfine.train` takes them.

1. :func:`start_run`: the run folder, the checkpoint to resume (if any) and the seed;
2. :func:`prepare_data`: the data set resolved and checked (its problems surface before anything slow);
3. :func:`prepare_model`: the model and the resolved hyper-parameters, new or from the checkpoint;
4. :func:`build_optimization`: DDP / SyncBN, the optimizer, the LR schedule, the gradient scaler and the EMA.

Each step returns a small record of what it decided; :mod:`dfine.engine.api` wires them into a
:class:`~dfine.engine.trainer.Trainer`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfine.config import DFineConfig
from dfine.config.image_size import check_image_size, image_size_hw
from dfine.data import DatasetSpec, check_dataset, resolve_dataset
from dfine.data.holdout import hold_out_validation
from dfine.engine import checkpoint as ckpt
from dfine.engine.arguments import TrainOptions
from dfine.engine.build import ModelReport, build_training_model
from dfine.engine.distributed import is_main_process
from dfine.engine.ema import ModelEMA
from dfine.engine.hparams import EVAL_SHARE, Hyperparameters, default_eval_interval, resolve_hyperparameters
from dfine.engine.optim import build_optimizer, freeze_stem
from dfine.engine.resuming import (
    apply_resume_changes,
    check_resume_options,
    resume_checkpoint,
    resumed_amp,
    resumed_eval_interval,
)
from dfine.engine.schedule import LRSchedule, build_lr_schedule
from dfine.errors import DFineError
from dfine.model import DFineForObjectDetection, model_class_for

logger = logging.getLogger("dfine")

DEFAULT_OUTPUT = Path("runs/train")
"""The run folder of :func:`dfine.train` when ``output`` is not given."""


@dataclass
class RunStart:
    """Where the run lives and what it continues.

    Attributes:
        output_dir: the run folder (a resumed run's is its checkpoint's).
        resume_from: the checkpoint continued, or None for a new run.
        state: that checkpoint's contents (None for a new run).
        seed: the seed in effect (a resumed run keeps its own).
    """

    output_dir: Path
    resume_from: Path | None
    state: dict[str, Any] | None
    seed: int


@dataclass
class DataPlan:
    """The checked data set: its spec, class names, training-set size and where it came from."""

    spec: DatasetSpec
    class_names: list[str]
    num_train: int
    source: str  # the resolved data set path, recorded in last.pt (a resume on other data is said)


@dataclass
class ModelPlan:
    """The model to train and how: hyper-parameters, input size, and the options a resume may have kept."""

    net: DFineForObjectDetection
    hparams: Hyperparameters
    image_hw: tuple[int, int]
    report: ModelReport
    eval_interval: int
    amp: bool | None


@dataclass
class Optimization:
    """Everything that updates the weights, built around the model."""

    model: nn.Module  # the model on its device (its batch norms synchronised under torchrun when asked)
    train_model: nn.Module  # what the loop calls: ``model``, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scheduler: LRSchedule
    scaler: torch.amp.GradScaler
    ema: ModelEMA
    amp_dtype: torch.dtype | None


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
    scaling and avoids the fp16 overflows behind many NaN reports of the original (its issue #133).
    """
    if amp is None:
        amp = device.type == "cuda"
    if not amp:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def start_run(options: TrainOptions) -> RunStart:
    """The run folder, the checkpoint ``options.resume`` names, and the seed; refuses to overwrite a run."""
    main = is_main_process()
    output = options.output
    output_dir = Path(output if output is not None else DEFAULT_OUTPUT).expanduser()
    resume_from, state = resume_checkpoint(options.resume, output_dir)
    seed = options.seed
    if resume_from is not None:
        # The run's files (metrics.jsonl, best/, best_stage1.pt) live next to its checkpoint: continuing them in
        # another folder would split one run over two, so the checkpoint's folder wins and the user is told.
        if main and output is not None and output_dir.resolve() != resume_from.parent.resolve():
            logger.warning("resuming: output=%s ignored, the checkpoint's folder %s is kept", output,
                           resume_from.parent)
        output_dir = resume_from.parent
        if main:
            ckpt.recover_best_model(output_dir / ckpt.BEST_DIR_NAME)
        assert state is not None
        saved_seed = int(state.get("extra", {}).get("seed", seed))
        if main and seed not in (0, saved_seed):  # 0 is the default, not a choice
            logger.warning("resuming: seed=%s ignored, the checkpoint's %s is kept", seed, saved_seed)
        seed = saved_seed
    elif (output_dir / ckpt.LAST_NAME).exists():
        raise DFineError(f"{output_dir} already holds a training run (last.pt): pass resume=True (--resume) to "
                         "continue it, or choose another output folder")
    return RunStart(output_dir, resume_from, state, seed)


def check_output_outside_images(output: Path, spec: DatasetSpec) -> None:
    """Refuse an output folder (a training run's, or ``val --output``) inside a YOLO image folder: folders are
    searched for images, so the pictures written there (plots, training batches, reports) would join the data set
    the next time it is read."""
    if spec.format != "yolo":
        return  # a COCO file lists its images: other files beside them are never read
    target = output.resolve()
    for split in spec.splits.values():
        for folder in split.images:
            if folder.is_dir() and target.is_relative_to(folder.resolve()):
                raise DFineError(f"{output}: inside the image folder {folder} of {spec.source}, where the pictures "
                                 "written there would be read as images of the data set: choose a folder outside it")


def prepare_data(options: TrainOptions, run: RunStart, val_split: float, masks: bool = False) -> DataPlan:
    """Resolve and check the data set (problems surface before anything slow), holding out ``val_split``; with
    ``masks`` (instance segmentation) its masks must serve every object."""
    spec = resolve_dataset(options.data)
    check_output_outside_images(run.output_dir, spec)
    if val_split:
        spec = hold_out_validation(spec, val_split)
    splits = [s for s in ("train", "val") if s in spec.splits]
    if "train" not in splits:
        raise DFineError(f"{spec.source}: the data set has no 'train' split")
    report = check_dataset(spec, splits, progress=options.progress and is_main_process(), masks=masks)
    if is_main_process():
        print(report.summary())
    if "val" not in spec.splits:
        logger.warning("%s has no validation split: training without evaluation; best/ will hold the final EMA "
                       "weights (val_split=0.1 / --val-split 0.1 holds a tenth of the training images out for "
                       "it)", spec.source)
    return DataPlan(spec, list(spec.names), len(spec.index("train").records), str(Path(spec.source).resolve()))


def prepare_model(options: TrainOptions, run: RunStart, data: DataPlan, device: torch.device, world_size: int,
                  hp_overrides: dict[str, Any], config_overrides: dict[str, Any], segment: bool = False) -> ModelPlan:
    """The model and its hyper-parameters: from the checkpoint when resuming, else built and resolved anew (a
    segmentation model with ``segment``)."""
    if run.state is not None:
        plan = _resumed_model(options, run, data, device, {**hp_overrides, **config_overrides})
    else:
        source = options.model if isinstance(options.model, nn.Module) else str(options.model)
        net, report = build_training_model(source, data.class_names, pretrained_backbone=options.pretrained_backbone,
                                           config_overrides=config_overrides, segment=segment)
        net.config.dataset_category_ids = data.spec.category_ids  # predictions can then name the data set's ids
        hp = resolve_hyperparameters(report.size, num_train_images=data.num_train, batch_size=options.batch_size,
                                     epochs=options.epochs, lr=options.lr, fine_tune=report.fine_tune,
                                     world_size=world_size, overrides=hp_overrides, recipe=options.recipe or "dfine")
        net.config.mal_gamma = hp.mal_gamma  # the criterion reads the classification loss from the config
        image_hw = image_size_hw(options.image_size)
        net.config.training_image_size = image_hw  # the size dfine.val and deploy() use for this model object
        eval_interval = options.eval_interval
        if eval_interval is None:
            num_val = len(data.spec.index("val").records) if "val" in data.spec.splits else 0
            eval_interval = default_eval_interval(data.num_train, num_val, hp.epochs)
            if num_val and eval_interval > 1:
                hp.notes.append(f"evaluation every {eval_interval} epochs (and at the stop and last epochs): "
                                f"{num_val} validation images beside {data.num_train} training images keep it "
                                f"near {EVAL_SHARE:.0%} of the training time (--eval-interval N to choose)")
        plan = ModelPlan(net, hp, image_hw, report, eval_interval, options.amp)
    check_image_size(plan.net.config, plan.image_hw)
    return plan


def _resumed_model(options: TrainOptions, run: RunStart, data: DataPlan, device: torch.device,
                   overrides: dict[str, Any]) -> ModelPlan:
    """The checkpoint's model, hyper-parameters and size, with the options a resume may change applied."""
    state, resume_from = run.state, run.resume_from
    assert state is not None and resume_from is not None
    if list(state.get("class_names", [])) != data.class_names:
        raise DFineError(f"{resume_from} was trained on classes {state.get('class_names')}, but {options.data} has "
                         f"{data.class_names}: resume with the same data set")
    hp = Hyperparameters.from_dict(state["hparams"])
    if options.recipe is not None and options.recipe != hp.recipe:
        raise DFineError(f"{resume_from} was trained with the {hp.recipe} recipe: resume it with that one (or "
                         "without --recipe)")
    check_resume_options(state, hp, overrides, batch_size=options.batch_size, lr=options.lr,
                         image_size=options.image_size)
    apply_resume_changes(hp, overrides)
    trained_on = state.get("extra", {}).get("data")
    if trained_on is not None and trained_on != data.source:
        # same classes, so it may be the same data moved; if not, best/ compares AP across validation sets
        hp.notes.append(f"resuming on {data.spec.source}, but the run so far trained on {trained_on}: the best "
                        "epoch is chosen across both validation sets")
    config = DFineConfig.from_dict(state["config"])
    net = model_class_for(config)(config).train()
    if options.epochs is not None and options.epochs != hp.epochs:
        hp.notes.append(f"epochs changed from {hp.epochs} to {options.epochs} on resume")
        hp.epochs = options.epochs
    eval_interval = resumed_eval_interval(state, options.eval_interval, hp.notes)
    amp = resumed_amp(state, options.amp, amp_dtype_for(device, None) is not None, hp.notes)
    done = int(state["epoch"]) + 1
    if done >= hp.epochs:  # nothing will train: say so rather than print a summary that looks like a run
        logger.warning("resuming a run that already finished its %d of %d epochs: nothing to train (pass a "
                       "larger epochs=N / --epochs N to continue it)", done, hp.epochs)
    if hp.freeze_backbone_norm:
        freeze_stem(net)
    image_hw = (int(state["image_size"][0]), int(state["image_size"][1]))
    report = ModelReport(str(resume_from), hp.size, hp.fine_tune, "from the checkpoint", resumed=True,
                         notes=[f"resuming after epoch {done}"])
    return ModelPlan(net, hp, image_hw, report, eval_interval, amp)


def build_optimization(net: nn.Module, hp: Hyperparameters, device: torch.device, world_size: int, sync_bn: bool,
                       amp: bool | None, steps_per_epoch: int) -> Optimization:
    """Move ``net`` to ``device`` and build what trains it. SyncBN comes before the optimizer (it replaces modules),
    the EMA after DDP (which syncs rank 0's weights to the others).

    The model keeps PyTorch's default (NCHW) layout: channels-last measured no faster for a D-FINE-N training step
    on this project's CPU (within noise) and moves the first steps' losses by rounding (docs/training-speed.md).
    """
    net.to(device)
    train_model: nn.Module = net
    if world_size > 1:
        if sync_bn and device.type == "cuda":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        elif sync_bn:
            logger.warning("sync_bn needs CUDA devices: ignored")
        train_model = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False)
    optimizer = build_optimizer(net, lr=hp.lr, backbone_lr=hp.backbone_lr, weight_decay=hp.weight_decay,
                                no_decay_bias=hp.no_decay_bias, backbone_norm_decay=hp.backbone_norm_decay,
                                betas=hp.betas)
    scheduler = build_lr_schedule(optimizer, hp, steps_per_epoch)
    amp_dtype = amp_dtype_for(device, amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    ema = ModelEMA(net, hp.ema_decay, hp.ema_warmups)
    return Optimization(net, train_model, optimizer, scheduler, scaler, ema, amp_dtype)
