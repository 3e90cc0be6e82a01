"""What both demos (detection, instance segmentation) share: their output folder, the saved model's preprocessing,
and how they print durations."""

from __future__ import annotations

from pathlib import Path

from dfine.errors import DFineError

__all__ = ["ensure_processor", "format_seconds", "prepare_output"]

_MARKER = ".dfine-demo"  # marks a folder as a demo output, which a new demo run may overwrite


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
