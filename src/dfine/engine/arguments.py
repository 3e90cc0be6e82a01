"""The arguments of :func:`dfine.train` and :func:`dfine.val`, checked before anything slow starts.

A typo or a wrong type must not wait for the data check of a large data set or a download: every argument is
checked first, and a problem is one :class:`~dfine.errors.ConfigError` line naming the argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfine.config.image_size import image_size_hw
from dfine.engine.experiment_loggers.choices import check_installed, check_logger_names
from dfine.engine.recipes import check_recipe
from dfine.errors import ConfigError
from dfine.utils.checks import (
    check_flag,
    check_integer,
    check_number,
    check_output_folder,
    check_path,
    check_seed,
    shown,
)
from dfine.utils.device import check_device


@dataclass(frozen=True)
class TrainOptions:
    """The arguments of one :func:`dfine.train` call (see there for their meaning)."""

    data: str | Path
    model: str | Path | nn.Module = "dfine-n-coco"
    epochs: int | None = None
    batch_size: int | None = None
    image_size: int | tuple[int, int] = 640
    output: str | Path | None = None
    device: str | torch.device = "auto"
    resume: bool | str | Path = False
    amp: bool | None = None
    workers: int | None = None
    seed: int = 0
    pretrained_backbone: bool = True
    lr: float | None = None
    eval_interval: int | None = None
    progress: bool = True
    sync_bn: bool = False
    profile: bool = False
    recipe: str | None = None
    logger: str | list[str] | tuple[str, ...] | None = None
    log_model: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    task: str | None = None

    def check(self) -> None:
        """Every argument, before the data check or a download."""
        check_path(self.data, "data", "a data YAML or data set folder")
        check_model(self.model, trainable=True)
        check_integer(self.epochs, "epochs", 1, optional=True)
        check_integer(self.batch_size, "batch_size", 1, optional=True)
        check_size(self.image_size)
        if self.output is not None:
            check_output_folder(self.output)
        check_device(self.device)
        if not isinstance(self.resume, bool):
            check_path(self.resume, "resume", "True, False or a checkpoint path")
        check_flag(self.amp, "amp", optional=True)
        check_installed(check_logger_names(self.logger) or ())  # a missing package before the data check, too
        for flag in ("pretrained_backbone", "progress", "sync_bn", "profile", "log_model"):
            check_flag(getattr(self, flag), flag)
        check_number(self.lr, "lr", low=0.0, low_open=True, optional=True)
        check_integer(self.eval_interval, "eval_interval", 0, optional=True)
        check_workers(self.workers)
        check_seed(self.seed)
        if self.recipe is not None:
            if not isinstance(self.recipe, str):
                raise ConfigError(f"recipe must be 'dfine' or 'deim', got {shown(self.recipe)}")
            check_recipe(self.recipe)
        from dfine.engine.task import check_task

        check_task(self.task)


def check_workers(workers: int | None) -> None:
    """A bad worker count only fails when the data loader starts, after the data check: refuse it first."""
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 0):
        raise ConfigError(f"the number of data-loading workers must be an integer >= 0, got {workers!r}")


def check_model(model: Any, trainable: bool) -> None:
    """A ConfigError unless ``model`` is a path-like name or a model object (for training: a
    ``DFineForObjectDetection``, whose weights and config can be copied)."""
    from dfine.model import DFineForObjectDetection

    if isinstance(model, DFineForObjectDetection) or (isinstance(model, nn.Module) and not trainable):
        return
    what = "a preset name, hub id, folder or file"
    if isinstance(model, nn.Module):  # a deploy-form or compiled copy: other parameters, or a wrapper
        raise ConfigError(f"model must be {what} or a DFineForObjectDetection, got {shown(model)}: pass the "
                          "DFineForObjectDetection it was made from, or its folder (model.save_pretrained(folder))")
    check_path(model, "model", what + (" or a DFineForObjectDetection" if trainable else " or a model"))


def check_size(image_size: Any, name: str = "image_size", optional: bool = False) -> None:
    """``image_size`` as :func:`~dfine.config.image_size.image_size_hw` takes it: a multiple of 32 or an (H, W) pair
    of them (or None when ``optional``); a wrong type is a ConfigError naming the argument, not a TypeError."""
    if image_size is not None or not optional:
        image_size_hw(image_size, name)


def check_val_arguments(model: Any, data: Any, split: Any, batch_size: Any, device: Any, image_size: Any,
                        workers: Any, progress: Any, dtype: Any, half_head: Any, output: Any = None,
                        score_threshold: Any = 0.5, val_split: Any = 0.0) -> torch.dtype | None:
    """Every argument of :func:`dfine.val`, before the data check and the model load (which can be a download);
    returns ``dtype`` as a torch dtype."""
    if output is not None:
        check_output_folder(output)
    check_number(score_threshold, "score_threshold", low=0.0, high=1.0)
    check_number(val_split, "val_split", low=0.0, high=1.0)

    check_model(model, trainable=False)
    check_path(data, "data", "a data YAML or data set folder")
    if not isinstance(split, str):
        raise ConfigError(f"split must be a split name such as 'val', got {shown(split)}")
    check_integer(batch_size, "batch_size", 1)
    check_device(device)
    check_size(image_size, optional=True)
    check_workers(workers)
    check_flag(progress, "progress")
    check_flag(half_head, "half_head")
    if dtype is not None:
        from dfine.model.deploy.fast import resolve_dtype

        dtype = resolve_dtype(dtype)
    if half_head and dtype not in (torch.float16, torch.bfloat16):
        raise ConfigError("half_head (--half-head) runs the head in the body's half precision: it needs dtype "
                          "float16 or bfloat16 (--half or --bf16)")
    return dtype
