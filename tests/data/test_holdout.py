"""dfine.data.holdout: a validation split held out of the training images, the same ones every time."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from dfine.data import check_dataset, make_synthetic_dataset, resolve_dataset
from dfine.data.holdout import held_out_count, hold_out_validation
from dfine.errors import ConfigError, DFineError


def _train_only(root: Path, num_train: int = 20, format: str = "coco") -> Path:
    """A synthetic data set whose data.yaml names only a training split."""
    data = make_synthetic_dataset(root, num_train=num_train, num_val=2, image_size=(64, 64), format=format)
    config = yaml.safe_load(data.read_text())
    config.pop("val")
    data.write_text(yaml.safe_dump(config))
    return data


@pytest.mark.parametrize("num, fraction, expected", [(20, 0.1, 2), (20, 0.26, 5), (3, 0.1, 1), (2, 0.9, 1),
                                                     (1000, 0.2, 200)])
def test_held_out_count(num, fraction, expected) -> None:
    assert held_out_count(num, fraction) == expected


@pytest.mark.parametrize("format", ["coco", "yolo"])
def test_the_split_is_disjoint_complete_and_checked(tmp_path: Path, format: str) -> None:
    spec = resolve_dataset(_train_only(tmp_path, format=format))
    everything = [r.file_name for r in spec.index("train").records]
    held = hold_out_validation(spec, 0.25)
    train = [r.file_name for r in held.index("train").records]
    val = [r.file_name for r in held.index("val").records]
    assert len(val) == 5 and not set(train) & set(val) and sorted(train + val) == sorted(everything)
    assert train == [f for f in everything if f in train]  # both keep the data set's order
    assert "val" not in spec.splits and len(spec.index("train").records) == 20  # the given spec is unchanged
    report = check_dataset(held, ["train", "val"], progress=False)
    assert report.splits["train"].images == 15 and report.splits["val"].images == 5
    assert "held out for validation" in report.summary()
    assert len(held.build("val")) == 5 and held.names == spec.names


def test_the_same_images_every_time_whatever_the_order(tmp_path: Path) -> None:
    """A resumed run, another rank and a later dfine val must agree; so must a data set whose files are listed in
    another order, and adding images must move few of those already held out."""
    data = _train_only(tmp_path)
    first = {r.file_name for r in hold_out_validation(resolve_dataset(data), 0.2).index("val").records}
    spec = resolve_dataset(data)
    spec.index("train").records.reverse()
    assert {r.file_name for r in hold_out_validation(spec, 0.2).index("val").records} == first
    larger = _train_only(tmp_path / "larger", num_train=24)  # the same 20 file names and 4 more
    grown = {r.file_name for r in hold_out_validation(resolve_dataset(larger), 0.2).index("val").records}
    assert len(grown) == 5 and len(first & grown) >= 3


def test_refusals(tmp_path: Path) -> None:
    with_val = resolve_dataset(make_synthetic_dataset(tmp_path / "both", num_train=4, num_val=2,
                                                      image_size=(64, 64)))
    with pytest.raises(DFineError, match="has a validation split already"):
        hold_out_validation(with_val, 0.1)
    single = resolve_dataset(_train_only(tmp_path / "one", num_train=1))
    with pytest.raises(DFineError, match=r"1 usable training image\(s\): too few"):
        hold_out_validation(single, 0.1)
    for bad in (0, 1.0, -0.2, True, "0.1"):
        with pytest.raises(ConfigError, match="val_split must be a fraction between 0 and 1"):
            hold_out_validation(single, bad)


def test_an_image_listed_twice_is_not_in_both_splits(tmp_path: Path) -> None:
    """A folder or list given twice (to oversample) lists each image twice: its copies stay together."""
    spec = resolve_dataset(_train_only(tmp_path, format="yolo"))
    records = spec.index("train").records
    records.extend(dataclasses.replace(r) for r in list(records))  # 40 records, 20 images
    held = hold_out_validation(spec, 0.275)  # 11 records: an odd count would cut a pair
    train = {r.file_name for r in held.index("train").records}
    val = [r.file_name for r in held.index("val").records]
    assert val and not train & set(val) and len(val) == 2 * len(set(val))


def test_windows_separators_hold_out_the_same_images(tmp_path: Path) -> None:
    data = _train_only(tmp_path, format="yolo")
    posix = {r.file_name for r in hold_out_validation(resolve_dataset(data), 0.2).index("val").records}
    spec = resolve_dataset(data)
    records = spec.index("train").records
    records[:] = [dataclasses.replace(r, file_name=r.file_name.replace("/", "\\")) for r in records]
    assert any("\\" in r.file_name for r in records)
    windows = {r.file_name for r in hold_out_validation(spec, 0.2).index("val").records}
    assert {name.replace("\\", "/") for name in windows} == posix
