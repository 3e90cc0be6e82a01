"""Calibration images for INT8 post-training quantization: pictures of the user's own data set, read exactly as
the exported graph will see them.

Post-training quantization measures the range of every activation it quantizes on a few hundred representative
inputs. They come from the data set's training split (the validation split, which judges the INT8 model, is not
used to calibrate it; a data set without a training split calibrates on its validation images, and says so),
spread evenly over the split, and are read by :class:`dfine.data.EvalTransforms` (stretch resize to the graph's
input size, values / 255), the preprocessing of ``dfine val`` and of the runtimes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dfine.errors import DatasetError, DFineError, InputFileError

__all__ = ["CalibrationSet", "calibration_set"]

logger = logging.getLogger("dfine")


@dataclass
class CalibrationSet:
    """Graph inputs to calibrate on: ``images`` float32 (B, 3, H, W) and ``sizes_wh`` int64 (B, 2) per batch."""

    batches: list[tuple[np.ndarray, np.ndarray]]
    split: str  # the split they come from
    source: Path  # the data set
    names: list[str]  # its class names
    splits: list[str]  # its splits (after any hold-out)

    @property
    def count(self) -> int:
        return sum(len(images) for images, _ in self.batches)

    def feeds(self) -> list[dict[str, np.ndarray]]:
        """The batches as the graph's named inputs."""
        return [{"images": images, "orig_target_sizes": sizes} for images, sizes in self.batches]


def calibration_set(data: str | Path, image_size: tuple[int, int], count: int = 300, batch: int = 1,
                    val_split: float = 0.0, progress: bool = False) -> CalibrationSet:
    """Up to ``count`` images of ``data``'s training split as graph inputs of ``image_size``, ``batch`` at a time
    (the last batch filled up with copies of its last image when the graph's batch is fixed).

    Raises:
        DFineError: a data set that cannot be read, or has no images to calibrate on (one line naming it).
    """
    from dfine.data import EvalTransforms, check_dataset, resolve_dataset
    from dfine.data.holdout import hold_out_validation

    if count < 1:
        raise DFineError(f"--calibration-images must be at least 1, got {count}")
    spec = resolve_dataset(data)
    if val_split:
        spec = hold_out_validation(spec, val_split)
    split = "train" if "train" in spec.splits else "val" if "val" in spec.splits else None
    if split is None:
        raise InputFileError(spec.source, f"has no train or val split to calibrate on (found: "
                                          f"{', '.join(spec.splits) or 'none'})")
    if split != "train":
        logger.warning("%s has no train split: calibrating on its validation images, which also judge the INT8 "
                       "model", spec.source)
    try:
        check_dataset(spec, [split], progress=progress)
    except DatasetError as error:
        if len(error.problems) == 1:  # a data set without images, say: the one problem, which names the file
            raise DFineError(error.problems[0]) from None
        raise
    dataset = spec.build(split, EvalTransforms(image_size))
    if len(dataset) == 0:
        raise InputFileError(spec.source, f"its {split} split has no images to calibrate the INT8 model on")
    chosen = np.unique(np.linspace(0, len(dataset) - 1, num=min(count, len(dataset))).round().astype(int))
    images, sizes = [], []
    for index in chosen.tolist():
        pixels, target = dataset[index]
        height, width = (int(v) for v in target["orig_size"])
        images.append(pixels.numpy()[None])
        sizes.append([[width, height]])
    batches = []
    for start in range(0, len(images), batch):
        piece, piece_sizes = images[start:start + batch], sizes[start:start + batch]
        while len(piece) < batch:
            piece, piece_sizes = piece + piece[-1:], piece_sizes + piece_sizes[-1:]
        batches.append((np.concatenate(piece).astype(np.float32), np.array(np.concatenate(piece_sizes),
                                                                           dtype=np.int64)))
    return CalibrationSet(batches, split, Path(spec.source), list(spec.names), list(spec.splits))
