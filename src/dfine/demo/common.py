"""What both demos (detection, instance segmentation) share: their argument checks, their output folder, the saved
model's preprocessing, and how they print durations."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from dfine.errors import DFineError

__all__ = ["check_demo_arguments", "ensure_processor", "format_seconds", "prepare_output"]

_MARKER = ".dfine-demo"  # marks a folder as a demo output, which a new demo run may overwrite


def check_demo_arguments(config: Any, *, epochs: int | None, minutes: float | None, seed: int, image_size: int,
                         num_train: int, num_val: int, batch_size: int) -> None:
    """One-line errors for a demo's arguments before anything is drawn or trained; ``config`` is the model's
    ``DFineConfig``, which decides the image sizes it accepts."""
    from dfine.config.image_size import check_image_size, validate_image_size
    from dfine.utils.checks import check_seed

    if epochs is not None and epochs < 1:
        raise DFineError(f"epochs must be at least 1, got {epochs}")
    if minutes is not None and not 0 < minutes < math.inf:  # NaN fails both comparisons
        raise DFineError(f"minutes must be a positive number, got {minutes}")
    check_seed(seed)  # training checks it too, but only after the data set is drawn, which fails first on it
    validate_image_size(image_size, "image size")
    check_image_size(config, image_size, training=False)
    if num_train < batch_size or num_val < 1:
        raise DFineError(f"need at least {batch_size} training images (one batch) and 1 validation image")


def prepare_output(output: Path) -> None:
    """Create ``output``; refuse a non-empty folder that an earlier demo did not write (it could be anything)."""
    from dfine.utils.files import prepare_output_dir

    if output.is_dir() and any(output.iterdir()) and not (output / _MARKER).exists():
        raise DFineError(f"{output}: folder exists and was not written by dfine demo; pass another --output")
    if (output / _MARKER).exists():
        import shutil

        for name in ("data", "train", "predictions"):
            shutil.rmtree(output / name, ignore_errors=True)
    prepare_output_dir(output)  # a file of that name, or a file above it, is a one-line error
    (output / _MARKER).write_text("written by dfine demo; a new demo run replaces this folder's contents\n")


def ensure_processor(model_dir: Path, image_size: int) -> None:
    """Make ``dfine predict --model model_dir`` resize to the training size (the default would be 640)."""
    from dfine.processing.processor import PREPROCESSOR_CONFIG_NAME, DFineImageProcessor

    if model_dir.is_dir() and not (model_dir / PREPROCESSOR_CONFIG_NAME).exists():
        DFineImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(model_dir)


def format_seconds(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"
