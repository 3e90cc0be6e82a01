"""resolve_dataset: every accepted --data layout, and a clear error for the rest."""

from __future__ import annotations

import json

import pytest
from datahelpers import box_annotation, write_coco, write_image, write_yolo

from dfine.data import resolve_dataset
from dfine.errors import InputFileError

_IMAGES = [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}]
_ANNOTATIONS = [box_annotation(1, 1, [4, 4, 20, 20], category_id=2)]
_CATEGORIES = [{"id": 2, "name": "bolt"}, {"id": 3, "name": "nut"}]


def test_coco_data_yaml(synthetic_pair):
    spec = resolve_dataset(synthetic_pair[0])
    assert spec.format == "coco" and set(spec.splits) == {"train", "val"}
    assert spec.category_ids == [1, 2, 3]
    assert len(spec.build("train")) == 12 and len(spec.build("val")) == 4


def test_coco_data_yaml_with_root_path(tmp_path):
    write_coco(tmp_path / "data" / "imgs", _IMAGES, _ANNOTATIONS, _CATEGORIES, name="../train.json")
    config = {
        "path": "data",
        "train": {"images": "imgs", "annotations": "train.json"},
        "val": {"images": "imgs", "annotations": "train.json"},
    }
    (tmp_path / "my.yaml").write_text(json.dumps(config))
    spec = resolve_dataset(tmp_path / "my.yaml")
    assert spec.format == "coco" and spec.names == ["bolt", "nut"]
    assert spec.build("val")[0][1]["labels"].tolist() == [0]


def test_yolo_data_yaml_and_folder(synthetic_pair):
    yolo_yaml = synthetic_pair[1]
    for data in (yolo_yaml, yolo_yaml.parent):
        spec = resolve_dataset(data)
        assert spec.format == "yolo" and spec.names == ["circle", "square", "triangle"]
        assert len(spec.build("val")) == 4


def test_folder_with_coco_data_yaml(synthetic_pair):
    assert resolve_dataset(synthetic_pair[0].parent).format == "coco"


def test_roboflow_coco_folder_drops_placeholder_category(tmp_path):
    categories = [
        {"id": 0, "name": "parts", "supercategory": "none"},
        {"id": 1, "name": "bolt", "supercategory": "parts"},
        {"id": 2, "name": "nut", "supercategory": "parts"},
    ]
    annotations = [box_annotation(1, 1, [4, 4, 20, 20], category_id=2)]
    for split in ("train", "valid"):
        write_coco(tmp_path / split, _IMAGES, annotations, categories, name="_annotations.coco.json")
    spec = resolve_dataset(tmp_path)
    assert spec.format == "coco" and set(spec.splits) == {"train", "val"}
    assert spec.names == ["bolt", "nut"] and spec.category_ids == [1, 2]
    assert spec.build("val")[0][1]["labels"].tolist() == [1]


def test_coco_style_folder(tmp_path):
    write_image(tmp_path / "train2017" / "a.png")
    write_image(tmp_path / "images" / "val2017" / "a.png")
    write_coco(tmp_path / "annotations", _IMAGES, _ANNOTATIONS, _CATEGORIES, "instances_train2017.json", False)
    write_coco(tmp_path / "annotations", _IMAGES, _ANNOTATIONS, _CATEGORIES, "instances_val2017.json", False)
    spec = resolve_dataset(tmp_path)
    assert spec.format == "coco"
    assert spec.splits["train"].images == (tmp_path / "train2017",)
    assert spec.splits["val"].images == (tmp_path / "images" / "val2017",)
    assert len(spec.build("train")) == len(spec.build("val")) == 1


def test_roboflow_yolo_yaml_with_parent_relative_paths(tmp_path):
    for split in ("train", "valid"):
        write_image(tmp_path / split / "images" / "a.png")
        (tmp_path / split / "labels").mkdir()
        (tmp_path / split / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 1\nnames: ['bolt']\n")
    spec = resolve_dataset(tmp_path / "data.yaml")
    assert spec.splits["val"].images == (tmp_path / "valid" / "images",)
    assert any("../valid/images" in note for note in spec.notes)
    assert len(spec.build("train")) == 1


def test_unknown_layout_lists_accepted_ones(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputFileError, match="no data set layout recognised; accepted: .*Roboflow.*YOLO"):
        resolve_dataset(tmp_path)
    with pytest.raises(InputFileError, match="no data set layout recognised"):
        resolve_dataset(tmp_path / "notes.txt")
    with pytest.raises(InputFileError, match="does not exist"):
        resolve_dataset(tmp_path / "missing")


def test_yolo_folder_without_names(tmp_path):
    write_yolo(tmp_path, {"a": "0 0.5 0.5 0.1 0.1\n"}, ["x"]).unlink()
    with pytest.raises(InputFileError, match="no data.yaml"):
        resolve_dataset(tmp_path)


def test_missing_split_is_a_clear_error(synthetic_pair):
    with pytest.raises(InputFileError, match="has no 'test' split"):
        resolve_dataset(synthetic_pair[0]).build("test")


def test_binary_data_yaml_is_one_line_naming_it(tmp_path):
    # a data.yaml that is not UTF-8 text raised a UnicodeDecodeError from inside PyYAML
    data = write_yolo(tmp_path, {"a": "0 0.5 0.5 0.1 0.1\n"}, ["x"])
    data.write_bytes(b"\xff\xfe\x00\x01names")
    for given in (tmp_path, data):
        with pytest.raises(InputFileError, match=r"data\.yaml: not a UTF-8 text file"):
            resolve_dataset(given)
