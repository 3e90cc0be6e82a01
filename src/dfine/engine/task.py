"""Which task a training run learns: ``detect`` (boxes) or ``segment`` (boxes and instance masks, D-FINE-seg).

Chosen by ``task`` when given; otherwise by the model: a segmentation model (a D-FINE-seg checkpoint, a saved
``DFineForInstanceSegmentation``, a resumed segmentation run) trains segmentation, anything else detection. A
detection checkpoint or preset with ``task="segment"`` becomes a segmentation model whose mask branch starts fresh;
a segmentation checkpoint with ``task="detect"`` a detector without it (:func:`dfine.engine.build.build_training_model`
says which).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from dfine.errors import ConfigError

__all__ = ["TASKS", "check_task", "trains_segmentation"]

TASKS = ("detect", "segment")


def check_task(task: Any) -> None:
    """A ConfigError unless ``task`` is None or one of :data:`TASKS`."""
    if task is not None and task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)} (or None: the model's own), got {task!r}")


def trains_segmentation(task: str | None, model: str | Path | nn.Module, resumed_config: dict[str, Any] | None) -> bool:
    """Whether the run trains instance segmentation (see the module docstring).

    Args:
        task: ``"detect"``, ``"segment"`` or None (the model decides).
        model: the ``model`` argument of the run.
        resumed_config: the config dict of the checkpoint a resumed run continues (its task wins), or None.
    """
    if resumed_config is not None:
        return bool(resumed_config.get("use_mask_head", False))
    if task is not None:
        return task == "segment"
    if isinstance(model, nn.Module):
        return bool(getattr(getattr(model, "config", None), "use_mask_head", False))
    from dfine.config.presets import is_preset

    if is_preset(str(model)):
        return False
    from dfine.model.resolve import resolve_config

    return bool(resolve_config(model).use_mask_head)
