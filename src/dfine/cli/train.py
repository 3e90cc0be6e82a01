"""``dfine train --data D --model M``: the D-FINE recipe on your data (:func:`dfine.train`).

Run it under ``torchrun --nproc_per_node N -m dfine.cli.main train ...`` (or ``torchrun $(which dfine) train ...``)
for multi-GPU training; ``--batch-size`` is then the total over all GPUs.
"""

from __future__ import annotations

import argparse
import inspect
import re
from typing import Any

# YAML 1.1 (PyYAML) reads a number with an exponent but no dot, such as 1e-4, as text
_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_assignment(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with the value read as YAML (``3``, ``0.5``, ``1e-4``, ``true``, ``[1, 2]``, text)."""
    import yaml

    from dfine.errors import ConfigError

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE, got {text!r}")
    if _EXPONENT_NUMBER.fullmatch(value.strip()):
        return key.strip(), float(value)
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        return key.strip(), value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train or fine-tune on a data set",
        description="Train D-FINE on a COCO or YOLO data set with the original recipe (scaled to your batch size "
                    "and data set; the resolved values are printed). A preset name trains that size from scratch, "
                    "its backbone initialised from ImageNet weights (downloaded once) unless "
                    "--no-pretrained-backbone; a hub id, folder or file fine-tunes those weights.")
    p.add_argument("--data", required=True, help="data YAML or data set folder (COCO, Roboflow or YOLO layout)")
    p.add_argument("--model", default="dfine-n-coco",
                   help="preset (dfine-n-coco ... dfine-x-coco: from scratch, ImageNet backbone) or weights to "
                        "fine-tune (e.g. ustc-community/dfine-small-coco); default dfine-n-coco")
    p.add_argument("--task", choices=("detect", "segment"), default=None,
                   help="segment: instance segmentation (boxes and masks; the data set needs polygons or masks; a "
                        "detection model or preset gets a fresh mask branch); detect: boxes only (default: the "
                        "model's own task)")
    p.add_argument("--epochs", type=int, default=None, help="default: from the recipe and the data set size")
    p.add_argument("--batch-size", type=int, default=None,
                   help="total images per step over all processes (default: the recipe's per-GPU batch)")
    p.add_argument("--image-size", type=int, default=640, help="square input size, multiple of 32 (default 640)")
    p.add_argument("--output", default=None,
                   help="run folder (default runs/train; when resuming, the checkpoint's folder)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="PATH",
                   help="continue <output>/last.pt, or the given checkpoint")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (default: on for CUDA, off on CPU; when resuming, the run's own)")
    p.add_argument("--workers", type=int, default=None,
                   help="data-loading processes per GPU (default 4, or the number of CPU cores if fewer)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--lr", type=float, default=None, help="base learning rate, used as given (default: the recipe's, "
                                                          "scaled to the batch size)")
    p.add_argument("--eval-interval", type=int, default=None,
                   help="evaluate every N epochs (0: never; default: chosen from the split sizes to keep evaluation "
                        "near 5%% of the training time, 1 on large data; when resuming, the run's own)")
    p.add_argument("--patience", type=int, default=None, metavar="N",
                   help="early stopping: after N evaluations without a better AP, stage 1 ends (stage 2 follows from "
                        "the best weights) and stage 2 ends the run (default: off; a resume may change it)")
    p.add_argument("--val-split", type=float, default=None, metavar="F",
                   help="for a data set without a validation split: hold this fraction of the training images out "
                        "for validation (e.g. 0.1; the same images every time, chosen by file name)")
    p.add_argument("--no-pretrained-backbone", action="store_true",
                   help="start the backbone from random weights instead of ImageNet (presets only)")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under multi-GPU training")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--recipe", choices=("dfine", "deim"), default=None,
                   help="dfine: the original D-FINE recipe (default); deim: DEIM's Dense O2O (mosaic, mixup), "
                        "Matchability-Aware Loss and flat-cosine schedule, which converge in fewer epochs")
    p.add_argument("--profile", action="store_true",
                   help="print where each epoch's time goes (data, forward, loss, backward, optimizer, EMA, "
                        "evaluation, writes) and write the run's totals to profile.json")
    p.add_argument("--logger", action="append", default=None, metavar="NAME",
                   help="also log to wandb, mlflow or tensorboard (repeatable, or comma-separated; none: no logger). "
                        "W&B runs offline without a W&B login; MLflow uses MLFLOW_TRACKING_URI, else ./mlruns. "
                        "TensorBoard is on whenever installed. Default: none, or on --resume the run's own")
    p.add_argument("--log-model", action="store_true",
                   help="also upload the best/ folder to W&B / MLflow at the end of the run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="a hyper-parameter (stop_epoch, warmup_iters, ema_decay, ...) or model config field "
                        "(num_queries, num_denoising, ...); repeatable")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dfine.engine.api import train
    from dfine.engine.distributed import is_main_process
    from dfine.engine.evaluator import format_ap
    from dfine.errors import ConfigError

    overrides = dict(parse_assignment(text) for text in args.overrides)
    if args.patience is not None:
        if "patience" in overrides:
            raise ConfigError("give patience once: --patience or --set patience=..., not both")
        overrides["patience"] = args.patience
    if args.val_split is not None:
        if "val_split" in overrides:
            raise ConfigError("give val_split once: --val-split or --set val_split=..., not both")
        overrides["val_split"] = args.val_split
    # train()'s named parameters have options of their own; --set is for the **overrides
    named = {name for name, p in inspect.signature(train).parameters.items() if p.kind is not p.VAR_KEYWORD}
    clash = set(overrides) & named
    if clash:
        raise ConfigError(f"use the --{sorted(clash)[0].replace('_', '-')} option instead of --set")
    result = train(
        args.data, model=args.model, epochs=args.epochs, batch_size=args.batch_size, image_size=args.image_size,
        output=args.output, device=args.device, resume=args.resume, amp=args.amp, workers=args.workers,
        seed=args.seed, pretrained_backbone=not args.no_pretrained_backbone, lr=args.lr,
        eval_interval=args.eval_interval, progress=not args.no_progress, sync_bn=args.sync_bn,
        profile=args.profile, recipe=args.recipe, logger=args.logger, log_model=args.log_model, task=args.task,
        **overrides)
    if is_main_process():
        ap = result.metrics.get("AP")
        mask_ap = (result.metrics.get("segm") or {}).get("AP")
        scores = (f"AP {format_ap(ap)}" if isinstance(ap, float) else "") + \
            (f", mask AP {format_ap(mask_ap)}" if isinstance(mask_ap, float) else "")
        print(f"best model: {result.best_model}" + (f" ({scores})" if scores else "")
              + f"; last checkpoint: {result.last_checkpoint}")
    return 0
