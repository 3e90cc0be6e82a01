"""A validation split held out of the training images, for data sets that come without one.

Many exports have a single subset (Label Studio, CVAT's ``default``, a folder of labelled photos): training them
without a validation split means no AP, no best epoch and no early stopping. ``dfine train --val-split 0.1`` sets a
tenth of the training images aside instead, and ``dfine val --val-split 0.1`` finds the same ones again.

Which images are held out depends only on their file names (a hash orders them), not on a seed, the machine or the
order of the files: a resumed run, another rank and a later ``dfine val`` all pick the same images, and adding
images to the data set moves only a few between the two splits.
"""

from __future__ import annotations

import dataclasses
import hashlib

from dfine.data.index import DetectionIndex, ImageRecord
from dfine.data.resolve import DatasetSpec
from dfine.errors import ConfigError, DFineError

__all__ = ["hold_out_validation", "held_out_count"]


def held_out_count(num_images: int, fraction: float) -> int:
    """How many of ``num_images`` a ``fraction`` holds out: the nearest whole number, at least one, and never every
    image (training keeps at least one)."""
    return min(max(1, round(fraction * num_images)), num_images - 1)


def _order_key(record: ImageRecord) -> str:
    # '/' whatever the system: a run trained on Linux and evaluated or resumed on Windows holds out the same images
    return hashlib.sha1(record.file_name.replace("\\", "/").encode("utf-8")).hexdigest()


def _held_keys(records: list[ImageRecord], count: int) -> set[str]:
    """The keys of the first ``count`` images in hash order, whole: an image listed twice (a folder or list given
    twice to oversample it) is held out with all its copies, or none, so that no copy trains on a validation image."""
    keys = sorted(_order_key(r) for r in records)
    held = set(keys[:count])
    if len(held) == len(set(keys)):  # every image would go: training keeps the last one
        held.discard(keys[count - 1])
    return held


def hold_out_validation(spec: DatasetSpec, fraction: float) -> DatasetSpec:
    """``spec`` with a ``val`` split made of ``fraction`` of its training images, which leave the training split.

    The returned spec shares the parsed training annotations (its ``index("train")`` and ``index("val")`` are the
    two parts); ``spec`` itself is unchanged. The data set check then verifies each image once, in its split.

    Raises:
        ConfigError: ``fraction`` is not in (0, 1).
        DFineError: the data set has a validation split already, no training split, or fewer than two images.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 < fraction < 1.0:
        raise ConfigError(f"val_split must be a fraction between 0 and 1 (e.g. 0.1), got {fraction!r}")
    if "val" in spec.splits:
        raise DFineError(f"{spec.source}: has a validation split already; val_split is for data sets without one")
    if "train" not in spec.splits:
        raise DFineError(f"{spec.source}: the data set has no 'train' split to hold validation images out of")
    train = spec.index("train")
    records = train.records
    if len(records) < 2:
        raise DFineError(f"{spec.source}: {len(records)} usable training image(s): too few to hold out a "
                         "validation split")
    count = held_out_count(len(records), fraction)
    held_keys = _held_keys(records, count)
    held = {id(r) for r in records if _order_key(r) in held_keys}
    if not held:
        raise DFineError(f"{spec.source}: every training image is the same file: too few to hold out a validation "
                         "split")
    # both parts keep the data set's order; the annotation repairs and problems stay with the training part, so
    # the data set check reports them once
    kept = dataclasses.replace(train, records=[r for r in records if id(r) not in held])
    val = DetectionIndex(source=train.source, categories=train.categories,
                         records=[r for r in records if id(r) in held])
    note = (f"no validation split: {len(held)} of the {len(records)} training images are held out for validation "
            f"(val_split {fraction:g}, chosen by file name)")
    return dataclasses.replace(spec, splits={**spec.splits, "val": spec.splits["train"]}, notes=[*spec.notes, note],
                               _indexes={**spec._indexes, "train": kept, "val": val})
