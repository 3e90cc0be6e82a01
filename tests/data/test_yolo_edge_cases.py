"""Data sets as users really have them: shared label files, macOS/Jupyter debris, boxes touching the image edge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datahelpers import box_annotation, write_coco, write_image, write_yolo

from dfine.data import check_dataset, resolve_dataset
from dfine.data.index import CLIP_TOLERANCE_PX
from dfine.data.yolo import list_images
from dfine.errors import DatasetError, InputFileError


def _problems(data: Path) -> list[str]:
    with pytest.raises(DatasetError) as info:
        check_dataset(data, progress=False)
    return info.value.problems


def _clip_repairs(data: Path) -> list[str]:
    report = check_dataset(data, progress=False)
    assert report.ok, report.problems
    return [line for line in report.repairs if "box clipped to its image" in line]


def _coco_one_box(folder: Path, bbox: list[float]) -> Path:
    """A COCO data YAML (train = val) with one 64x48 image holding one box."""
    image = {"id": 1, "file_name": "a.png", "width": 64, "height": 48}
    ann = write_coco(folder / "imgs", [image], [box_annotation(1, 1, bbox)], name="train.json")
    entry = {"images": "imgs", "annotations": f"imgs/{ann.name}"}
    (folder / "data.yaml").write_text(json.dumps({"train": entry, "val": entry}))
    return folder / "data.yaml"


# ---- images with the same stem share a label file -----------------------------------------------------------------


def test_images_sharing_a_label_file_are_a_problem(tmp_path):
    # a.png and a.jpg both map to labels/train/a.txt: one of them would train on the other one's boxes
    data = write_yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n"}, ["x"])
    write_image(tmp_path / "images" / "train" / "a.jpg")
    train = tmp_path / "images" / "train"
    expected = (
        f"{train / 'a.jpg'} and {train / 'a.png'} share the label file {tmp_path / 'labels' / 'train' / 'a.txt'}: "
        "rename one of them"
    )
    assert _problems(data) == [expected]
    with pytest.raises(DatasetError, match="1 problem"):
        resolve_dataset(data).build("train")


def test_three_images_sharing_a_label_file_are_one_problem(tmp_path):
    data = write_yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n"}, ["x"])
    for suffix in ("jpg", "bmp"):
        write_image(tmp_path / "images" / "train" / f"a.{suffix}")
    train = tmp_path / "images" / "train"
    expected = (
        f"{train / 'a.bmp'}, {train / 'a.jpg'} and {train / 'a.png'} share the label file "
        f"{tmp_path / 'labels' / 'train' / 'a.txt'}: rename all but one"
    )
    assert _problems(data) == [expected]


def test_same_stem_without_a_label_file_is_fine(tmp_path):
    # no a.txt: both are background images, and no image gets another one's boxes
    data = write_yolo(tmp_path, {"b": "0 0.5 0.5 0.2 0.2\n"}, ["x"])
    for suffix in ("png", "jpg"):
        write_image(tmp_path / "images" / "train" / f"a.{suffix}")
    report = check_dataset(data, progress=False)
    assert report.ok, report.problems
    assert (report.splits["train"].images, report.splits["train"].empty_images) == (3, 2)


# ---- hidden files and folders --------------------------------------------------------------------------------------


def _add_debris(images: Path) -> None:
    """What macOS and Jupyter leave in image folders: none of it is an image of the data set."""
    (images / "._a.png").write_bytes(b"\x00\x05\x16\x07 Mac OS X resource fork")
    (images / ".thumb.png").write_bytes(b"not an image")
    write_image(images / ".ipynb_checkpoints" / "a-checkpoint.png")
    write_image(images / "sub" / ".cache" / "c.png")


def test_hidden_files_and_folders_are_not_listed_as_images(tmp_path):
    data = write_yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n"}, ["x"])
    train = tmp_path / "images" / "train"
    _add_debris(train)
    assert list_images([train]) == ([train / "a.png"], [])
    report = check_dataset(data, progress=False)
    assert report.ok, report.problems
    assert report.splits["train"].images == 1


def test_a_data_set_inside_a_hidden_folder_is_still_listed(tmp_path):
    # only the names below the split's folder count: ~/.cache/datasets/... is where downloads often land
    data = write_yolo(tmp_path / ".cache" / "ds", {"a": "0 0.5 0.5 0.2 0.2\n"}, ["x"])
    assert check_dataset(data, progress=False).splits["train"].images == 1


def test_hidden_image_named_in_an_image_list_is_kept(tmp_path):
    write_yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n"}, ["x"])
    write_image(tmp_path / "images" / "train" / ".b.png")
    listing = tmp_path / "train.txt"
    listing.write_text("./images/train/a.png\n./images/train/.b.png\n")
    images = tmp_path / "images" / "train"
    assert list_images([listing]) == ([images / ".b.png", images / "a.png"], [])
    assert list_images([images / ".b.png"]) == ([images / ".b.png"], [])


# ---- clipping: rounding versus real overshoot ----------------------------------------------------------------------


def test_rounding_outside_the_image_is_clipped_silently(tmp_path):
    # what YOLO exporters write for a full-image box: y1 = (0.5 - 0.5000005) * 48 = -0.000024 px
    data = write_yolo(tmp_path, {"a": "0 0.5 0.5 1.0 1.000001\n"}, ["x"])
    assert _clip_repairs(data) == []
    assert resolve_dataset(data).build("train")[0][1]["boxes"].tolist() == [[0, 0, 64, 48]]


def test_real_overshoot_is_still_clipped_and_reported(tmp_path):
    # 1.05 * 48 = 50.4 px tall: 1.2 px above and below the image
    data = write_yolo(tmp_path, {"a": "0 0.5 0.5 1.0 1.05\n"}, ["x"])
    assert len(_clip_repairs(data)) == 1
    assert resolve_dataset(data).build("train")[0][1]["boxes"].tolist() == [[0, 0, 64, 48]]


@pytest.mark.parametrize(
    ("bbox", "reported"),
    [
        ([-0.4, 10, 20, 20], False),  # left side less than half a pixel outside
        ([50, 40, 14.3, 8.4], False),  # right and bottom sides 0.3 / 0.4 px outside
        ([-0.6, 10, 20, 20], True),  # just over the tolerance
        ([50, 40, 14.3, 9], True),  # bottom 1 px outside
    ],
)
def test_coco_boxes_get_the_same_tolerance(tmp_path, bbox, reported):
    assert CLIP_TOLERANCE_PX == 0.5  # the cases above sit on either side of it
    data = _coco_one_box(tmp_path, bbox)
    assert bool(_clip_repairs(data)) is reported
    x, y, w, h = bbox
    clipped = [max(x, 0), max(y, 0), min(x + w, 64), min(y + h, 48)]
    boxes = resolve_dataset(data).build("train")[0][1]["boxes"].tolist()
    assert boxes == [pytest.approx(clipped)]


# ---- image lists ---------------------------------------------------------------------------------------------------


def test_list_entries_relative_to_the_data_root_are_found(tmp_path):
    """Darknet-style lists name images relative to the data set (``images/train/a.png``), Ultralytics ones relative
    to the list (``./...``): a list kept in a subfolder must work either way, with each image's own labels."""
    data = write_yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n", "b": "0 0.25 0.25 0.1 0.1\n"}, ["x"])
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("images/train/a.png\n./../images/train/b.png\n")
    (lists / "val.txt").write_text("images/val/v.png\n")
    data.write_text(json.dumps({"path": ".", "train": "lists/train.txt", "val": "lists/val.txt", "names": ["x"]}))
    report = check_dataset(data, progress=False)
    assert report.ok, report.problems
    index = resolve_dataset(data).index("train")
    assert sorted(Path(r.file_name).name for r in index.records) == ["a.png", "b.png"]
    assert all(len(r.boxes) == 1 for r in index.records)


def _labels_beside_images(root: Path) -> None:
    """CVAT YOLO 1.1: obj_train_data/ holds each image and its label file side by side."""
    write_image(root / "obj_train_data" / "y.png")
    (root / "obj_train_data" / "y.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    (root / "obj.names").write_text("car\n")
    (root / "train.txt").write_text("data/obj_train_data/y.png\n")


def test_an_images_folder_above_the_data_set_is_not_taken_for_its_image_folder(tmp_path):
    # The data set is stored under a folder the user happened to name "images": labels/ beside it means nothing.
    root = tmp_path / "images" / "myset"
    _labels_beside_images(root)
    report = check_dataset(root, progress=False)
    assert report.ok, report.problems
    assert report.splits["train"].boxes == 1


def test_labels_beside_the_images_are_found_when_labels_folder_has_none(tmp_path):
    # The images folder is inside the data set, but the labels were written next to the images.
    data = write_yolo(tmp_path / "data", {"a": "0 0.5 0.5 0.5 0.5\n"}, ["cat"])
    (tmp_path / "data" / "labels" / "train" / "a.txt").rename(tmp_path / "data" / "images" / "train" / "a.txt")
    report = check_dataset(data, progress=False)
    assert report.ok, report.problems
    assert report.splits["train"].boxes == 1


@pytest.mark.parametrize(("name", "content", "problem"), [
    ("a.pbm", b"P1\n1 1\n0\n", ".pbm is not an image type dfine reads (convert it to one of .bmp, .gif"),
    ("a.pcx", b"\x0a\x05\x01\x08" + bytes(124), "not an accepted image type (.pcx"),
    ("list.bin", b"\xff\xd8\x81\x00binary", "not a text list of images"),
])
def test_a_split_entry_naming_a_file_that_is_no_image_list_is_a_problem(tmp_path, name, content, problem):
    data = write_yolo(tmp_path / "data", {"a": "0 0.5 0.5 0.5 0.5\n"}, ["cat"])
    (tmp_path / "data" / name).write_bytes(content)
    data.write_text(json.dumps({"train": name, "val": "images/val", "names": ["cat"]}))
    problems = _problems(data)
    assert any(line.startswith(f"{tmp_path / 'data' / name}: ") and problem in line for line in problems), problems


@pytest.mark.parametrize("path", [5, ["a"]])
def test_a_data_yaml_path_that_is_not_a_string_is_one_line(tmp_path, path):
    data = write_yolo(tmp_path / "data", {"a": "0 0.5 0.5 0.5 0.5\n"}, ["cat"])
    data.write_text(json.dumps({"path": path, "train": "images/train", "val": "images/val", "names": ["cat"]}))
    with pytest.raises(InputFileError, match="'path' must be a folder"):
        resolve_dataset(data)


# ---- image types ---------------------------------------------------------------------------------------------------


def test_jpeg_variants_are_read_and_unread_photo_types_are_reported(tmp_path):
    """.jfif/.jpe/.mpo are JPEGs Pillow reads; an iPhone .heic is left out, and said so, never silently."""
    from PIL import Image

    data = write_yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n"}, ["x"])
    train = tmp_path / "images" / "train"
    for stem, suffix in (("b", ".jfif"), ("c", ".jpe"), ("d", ".MPO")):
        Image.new("RGB", (64, 48), (200, 10, 10)).save(train / f"{stem}{suffix}", format="JPEG")
        (tmp_path / "labels" / "train" / f"{stem}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (train / "e.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (tmp_path / "labels" / "train" / "e.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (train / "notes.pdf").write_bytes(b"%PDF-1.4")  # not a photo type: not mentioned
    report = check_dataset(data, progress=False)
    assert report.ok, report.problems
    assert report.splits["train"].images == 4
    left = [line for line in report.repairs if "left out" in line]
    assert len(left) == 1 and left[0].startswith("train: 1 x image left out: .heic is not an image type dfine reads")
    assert str(train / "e.heic") in left[0] and "pdf" not in " ".join(report.repairs)
    dataset = resolve_dataset(data).build("train", transforms=None)
    assert len(dataset) == 4 and all(dataset[i][0] is not None for i in range(4))


@pytest.mark.parametrize("names, class_id", [("[cat, null]", 1), ("['', dog]", 0), ("{0: cat, 3: }", 3)])
def test_a_class_without_a_name_is_refused(tmp_path, names, class_id):
    # an empty entry reads as null, and the class was trained and reported as 'None'
    data = write_yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n"}, ["x"])
    data.write_text(f"train: images/train\nval: images/val\nnames: {names}\n")
    with pytest.raises(InputFileError, match=rf"data\.yaml: class {class_id} in 'names' has no name"):
        resolve_dataset(data)
