"""Export layouts of common annotation tools, JPEGs lacking their end marker, and problems shared by splits."""

from __future__ import annotations

import io
import json
import re
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from datahelpers import box_annotation, write_coco, write_image, write_yolo
from PIL import Image, ImageFile

from dfine.data import check_dataset, load_image, resolve_dataset
from dfine.errors import DatasetError, InputFileError

_IMAGE = {"id": 1, "file_name": "a.png", "width": 64, "height": 48}
_BOX = [box_annotation(1, 1, [4, 4, 20, 20])]


# ---- COCO exports ---------------------------------------------------------------------------------------------------


def _coco_subsets(root: Path, subsets: list[str], nested: bool = True) -> None:
    """annotations/instances_<subset>.json with its image in images/<subset>/ (or directly in images/)."""
    for subset in subsets:
        image_dir = root / "images" / subset if nested else root / "images"
        write_image(image_dir / "a.png")
        write_coco(root / "annotations", [_IMAGE], _BOX, name=f"instances_{subset}.json", make_images=False)


def test_cvat_default_subset_is_a_training_split_without_validation(tmp_path):
    _coco_subsets(tmp_path, ["default"], nested=False)
    spec = resolve_dataset(tmp_path)
    assert spec.format == "coco" and set(spec.splits) == {"train"}
    assert spec.splits["train"].images == (tmp_path / "images",)
    assert any("'default'" in note and "no validation split" in note for note in spec.notes)
    assert check_dataset(spec, progress=False).ok and len(spec.build("train")) == 1


@pytest.mark.parametrize(
    ("subsets", "splits"),
    [
        (["Train", "Validation"], {"train": "Train", "val": "Validation"}),
        (["training", "valid", "Testing"], {"train": "training", "val": "valid", "test": "Testing"}),
        (["TRAIN2017", "val_2017"], {"train": "TRAIN2017", "val": "val_2017"}),
    ],
)
def test_coco_subset_names_are_matched_case_insensitively(tmp_path, subsets, splits):
    _coco_subsets(tmp_path, subsets)
    spec = resolve_dataset(tmp_path)
    assert {split: files.images for split, files in spec.splits.items()} == {
        split: (tmp_path / "images" / subset,) for split, subset in splits.items()
    }
    assert spec.splits["val"].annotations == tmp_path / "annotations" / f"instances_{splits['val']}.json"


def test_two_annotation_files_for_one_split_are_refused(tmp_path):
    _coco_subsets(tmp_path, ["train2014", "train2017", "val2017"])
    with pytest.raises(InputFileError, match="train2014, train2017 all look like the 'train' split"):
        resolve_dataset(tmp_path)


def test_several_subsets_without_split_names_are_refused(tmp_path):
    _coco_subsets(tmp_path, ["batch1", "batch2"])
    with pytest.raises(InputFileError, match="batch1, batch2; none is named train"):
        resolve_dataset(tmp_path)


def test_capitalised_roboflow_folders(tmp_path):
    for split in ("Train", "Valid"):
        write_coco(tmp_path / split, [_IMAGE], _BOX, name="_annotations.coco.json")
    assert set(resolve_dataset(tmp_path).splits) == {"train", "val"}


@pytest.mark.parametrize("prefix", ["images/", ""])
def test_label_studio_coco_export(tmp_path, prefix):
    # Label Studio writes "images/<name>" (older versions: a bare name) in result.json beside images/
    write_image(tmp_path / "images" / "a.png")
    write_coco(tmp_path, [{**_IMAGE, "file_name": f"{prefix}a.png"}], _BOX, name="result.json", make_images=False)
    spec = resolve_dataset(tmp_path)
    assert spec.format == "coco" and set(spec.splits) == {"train"}
    assert spec.splits["train"].annotations == tmp_path / "result.json"
    assert any("no validation split" in note for note in spec.notes)
    assert check_dataset(spec, progress=False).ok
    assert spec.build("train")[0][1]["boxes"].tolist() == [[4, 4, 24, 24]]


# ---- YOLO exports with a class list file ----------------------------------------------------------------------------


def _yolo_without_names(root: Path) -> None:
    write_yolo(root, {"a": "1 0.5 0.5 0.25 0.5\n"}, ["x"]).unlink()


@pytest.mark.parametrize("class_list", ["classes.txt", "obj.names", "labels/classes.txt"])
def test_yolo_folder_with_a_class_list_file(tmp_path, class_list):
    _yolo_without_names(tmp_path)
    (tmp_path / class_list).write_text("bolt\nnut\n\n")
    spec = resolve_dataset(tmp_path)
    assert spec.format == "yolo" and spec.names == ["bolt", "nut"] and set(spec.splits) == {"train", "val"}
    assert check_dataset(spec, progress=False).ok
    assert spec.build("train")[0][1]["labels"].tolist() == [1]


def test_label_studio_yolo_export_with_flat_folders(tmp_path):
    write_image(tmp_path / "images" / "a.png")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.25 0.5\n")
    (tmp_path / "classes.txt").write_text("bolt\n")
    spec = resolve_dataset(tmp_path)
    assert set(spec.splits) == {"train"} and spec.splits["train"].images == (tmp_path / "images",)
    assert any("no validation split" in note for note in spec.notes)
    assert len(spec.build("train")) == 1


def test_cvat_yolo_export(tmp_path):
    write_image(tmp_path / "obj_train_data" / "a.png")
    (tmp_path / "obj_train_data" / "a.txt").write_text("0 0.5 0.5 0.25 0.5\n")
    (tmp_path / "obj.names").write_text("bolt\n")
    spec = resolve_dataset(tmp_path)
    assert spec.names == ["bolt"] and spec.splits["train"].images == (tmp_path / "obj_train_data",)
    assert spec.build("train")[0][1]["boxes"].tolist() == [[24, 12, 40, 36]]


def test_data_yaml_without_names_takes_them_from_the_class_list(tmp_path):
    _yolo_without_names(tmp_path)
    (tmp_path / "data.yaml").write_text("train: images/train\nval: images/val\n")
    with pytest.raises(InputFileError, match=r"data.yaml: has no class 'names' and there is no classes.txt"):
        resolve_dataset(tmp_path)
    (tmp_path / "classes.txt").write_text("bolt\nnut\n")
    for data in (tmp_path, tmp_path / "data.yaml"):
        spec = resolve_dataset(data)
        assert spec.source == tmp_path / "data.yaml" and spec.names == ["bolt", "nut"]
        assert spec.splits["val"].images == (tmp_path / "images" / "val",)


def test_yolo_without_any_class_names_says_what_is_missing(tmp_path):
    _yolo_without_names(tmp_path)
    with pytest.raises(InputFileError, match="no data.yaml with the class 'names' and no classes.txt or obj.names"):
        resolve_dataset(tmp_path)


def test_class_lists_that_disagree_are_refused(tmp_path):
    _yolo_without_names(tmp_path)
    (tmp_path / "classes.txt").write_text("bolt\nnut\n")
    (tmp_path / "obj.names").write_text("nut\nbolt\n")
    with pytest.raises(InputFileError, match="class lists disagree"):
        resolve_dataset(tmp_path)


def test_class_list_with_a_gap_is_refused(tmp_path):
    _yolo_without_names(tmp_path)
    (tmp_path / "classes.txt").write_text("bolt\n\nnut\n")
    with pytest.raises(InputFileError, match="line 2 is empty"):
        resolve_dataset(tmp_path)


# ---- JPEG end marker ------------------------------------------------------------------------------------------------


def _jpeg(progressive: bool = False) -> bytes:
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)  # fixed: a lot of scan data
    Image.fromarray(noise).save(buffer, "JPEG", quality=95, progressive=progressive)
    assert buffer.getvalue().endswith(b"\xff\xd9")
    return buffer.getvalue()


def _jpeg_data(tmp_path: Path, data: bytes) -> Path:
    """A COCO data YAML whose train and val share one annotation file naming one JPEG with the given bytes."""
    ann = write_coco(tmp_path / "imgs", [{**_IMAGE, "file_name": "a.jpg"}], _BOX, name="train.json", make_images=False)
    (tmp_path / "imgs" / "a.jpg").write_bytes(data)
    entry = {"images": "imgs", "annotations": f"imgs/{ann.name}"}
    (tmp_path / "data.yaml").write_text(json.dumps({"train": entry, "val": entry}))
    return tmp_path / "data.yaml"


@pytest.fixture
def no_global_truncation_flag(monkeypatch):
    """Fail if anything sets PIL's process-wide LOAD_TRUNCATED_IMAGES (unsafe while other threads decode)."""

    class Guarded(types.ModuleType):
        def __setattr__(self, name, value):
            if name == "LOAD_TRUNCATED_IMAGES":
                raise AssertionError("ImageFile.LOAD_TRUNCATED_IMAGES must not be set")
            super().__setattr__(name, value)

    monkeypatch.setattr(ImageFile, "__class__", Guarded)


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_missing_only_its_end_marker_is_accepted_with_a_warning(tmp_path, progressive, no_global_truncation_flag):
    full = _jpeg(progressive)
    data = _jpeg_data(tmp_path, full[:-2])
    spec = resolve_dataset(data)
    report = check_dataset(spec, progress=False)
    assert [line for line in report.warnings if "end marker" in line] == [
        f"{tmp_path / 'imgs' / 'a.jpg'}: JPEG end marker missing (last bytes of the file lost?), but all image data "
        "is there"
    ]  # once, although train and val share the image
    expected = torch.as_tensor(list(Image.open(io.BytesIO(full)).convert("RGB").getdata())).T.reshape(3, 48, 64)
    assert torch.equal(spec.build("train")[0][0], expected.to(torch.uint8))  # loaded the same way for training
    (tmp_path / "b.jpg").write_bytes(full[:-1])  # the marker's first byte is still there
    assert torch.equal(load_image(tmp_path / "b.jpg"), expected.to(torch.uint8))


def test_data_after_the_end_marker_is_no_truncation_warning(tmp_path):
    report = check_dataset(_jpeg_data(tmp_path, _jpeg() + b"camera trailer"), progress=False)
    assert report.ok and not any("end marker" in line for line in report.warnings)


_TRUNCATED = "unreadable or corrupt image (truncated: the JPEG data stops before the end of the image)"


@pytest.mark.parametrize(
    ("progressive", "cut", "problem"),
    [
        (False, 3, _TRUNCATED),  # only the last data byte is lost (with the marker)
        (False, 20, _TRUNCATED),
        (False, 600, _TRUNCATED),
        (True, 20, _TRUNCATED),
        (True, 150, _TRUNCATED),
    ],
)
def test_jpeg_missing_image_data_is_still_a_problem(tmp_path, progressive, cut, problem, no_global_truncation_flag):
    data = _jpeg_data(tmp_path, _jpeg(progressive)[:-cut])
    with pytest.raises(DatasetError) as info:
        check_dataset(data, progress=False)
    assert info.value.problems == [f"{tmp_path / 'imgs' / 'a.jpg'}: {problem}"]
    with pytest.raises(InputFileError, match=re.escape(problem)):
        load_image(tmp_path / "imgs" / "a.jpg")


# ---- problems shared by splits --------------------------------------------------------------------------------------


def test_a_problem_in_a_file_shared_by_splits_is_listed_and_counted_once(tmp_path):
    bad = [box_annotation(7, 1, [1, 1, 5])]
    ann = write_coco(tmp_path / "imgs", [_IMAGE], bad, name="train.json")
    entry = {"images": "imgs", "annotations": f"imgs/{ann.name}"}
    (tmp_path / "data.yaml").write_text(json.dumps({"train": entry, "val": entry}))
    with pytest.raises(DatasetError, match=r": 1 problem\(s\) \(1 in train and val\) that cannot") as info:
        check_dataset(tmp_path / "data.yaml", progress=False)
    assert info.value.problems == [f"{ann} annotation 7: 'bbox' must be 4 numbers [x, y, width, height], got [1, 1, 5]"]
    report = check_dataset(tmp_path / "data.yaml", progress=False, raise_on_problems=False)
    assert report.problem_splits == {info.value.problems[0]: ("train", "val")}
    assert f"  - [train, val] {info.value.problems[0]}" in report.summary().splitlines()


def test_problems_of_separate_files_name_their_split(tmp_path):
    train = write_coco(tmp_path / "imgs", [_IMAGE], [box_annotation(7, 1, [1, 1, 5])], name="train.json")
    val = write_coco(tmp_path / "imgs", [_IMAGE], [box_annotation(8, 1, [1, 1, 5], category_id=4)], name="val.json")
    config = {s: {"images": "imgs", "annotations": f"imgs/{f.name}"} for s, f in (("train", train), ("val", val))}
    (tmp_path / "data.yaml").write_text(json.dumps(config))
    with pytest.raises(DatasetError, match=r": 2 problem\(s\) \(1 in train, 1 in val\) that cannot") as info:
        check_dataset(tmp_path / "data.yaml", progress=False)
    assert [p.split(" annotation")[0] for p in info.value.problems] == [str(train), str(val)]


def test_unreadable_class_list_is_one_line(tmp_path):
    _yolo_without_names(tmp_path)
    (tmp_path / "classes.txt").write_bytes(b"\xff\xfeb\x00o\x00")  # UTF-16
    with pytest.raises(InputFileError, match=r"classes.txt: cannot read the class list"):
        resolve_dataset(tmp_path)
