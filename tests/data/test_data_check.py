"""check_dataset: each kind of unrepairable problem is named with its file; each repair is applied and reported."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from datahelpers import box_annotation, write_coco, write_image, write_yolo
from PIL import Image

from dfine.data import check_dataset, resolve_dataset
from dfine.errors import DatasetError

_IMAGE = {"id": 1, "file_name": "a.png", "width": 64, "height": 48}


def _coco_data(tmp_path: Path, images=None, annotations=None, categories=None, make_images=True) -> Path:
    """A COCO data YAML whose train and val are the same annotation file (by default with one good box)."""
    annotations = [box_annotation(100, 1, [2, 2, 10, 10])] if annotations is None else annotations
    ann = write_coco(tmp_path / "imgs", images or [_IMAGE], annotations, categories, "train.json", make_images)
    entry = {"images": "imgs", "annotations": f"imgs/{ann.name}"}
    (tmp_path / "data.yaml").write_text(json.dumps({"train": entry, "val": entry}))
    return tmp_path / "data.yaml"


def _problems(data: Path) -> list[str]:
    with pytest.raises(DatasetError) as info:
        check_dataset(data, progress=False)
    return info.value.problems


def _only_problem(data: Path) -> str:
    # train and val share the file: the problem is listed once for both splits
    problems = _problems(data)
    assert len(problems) == 1, problems
    return problems[0]


# ---- problems that stop training ------------------------------------------------------------------------------


def test_missing_image(tmp_path):
    data = _coco_data(tmp_path, make_images=False)
    assert _only_problem(data) == f"{tmp_path / 'imgs' / 'a.png'}: image file is missing"


def test_corrupt_image(tmp_path):
    data = _coco_data(tmp_path)
    (tmp_path / "imgs" / "a.png").write_bytes(b"not an image at all")
    problem = _only_problem(data)
    assert problem.startswith(f"{tmp_path / 'imgs' / 'a.png'}: unreadable or corrupt image")


def test_truncated_jpeg(tmp_path):
    data = _coco_data(tmp_path, images=[{**_IMAGE, "file_name": "a.jpg"}], make_images=False)
    buffer = io.BytesIO()
    Image.effect_noise((64, 48), 64).convert("RGB").save(buffer, "JPEG")
    (tmp_path / "imgs" / "a.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    problem = _only_problem(data)
    assert problem.startswith(f"{tmp_path / 'imgs' / 'a.jpg'}: unreadable or corrupt image")


def test_truncated_tiff(tmp_path):
    # A TIFF's header sits at its start: only its strips' positions tell that the pixels were cut off.
    data = _coco_data(tmp_path, images=[{**_IMAGE, "file_name": "a.tif"}], make_images=False)
    buffer = io.BytesIO()
    Image.effect_noise((64, 48), 64).convert("RGB").save(buffer, "TIFF")
    (tmp_path / "imgs" / "a.tif").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 2 // 3])
    problem = _only_problem(data)
    assert problem.startswith(f"{tmp_path / 'imgs' / 'a.tif'}: unreadable or corrupt image")


def test_image_size_differs_from_annotations(tmp_path):
    data = _coco_data(tmp_path, images=[{**_IMAGE, "width": 640, "height": 480}], make_images=False)
    write_image(tmp_path / "imgs" / "a.png", 64, 48)
    assert _only_problem(data) == (
        f"{tmp_path / 'imgs' / 'a.png'}: image is 64x48 but the annotations were made for 640x480; "
        "were the images resized after annotating?"
    )


def test_image_size_mismatch_is_reported_instead_of_the_boxes_it_puts_outside(tmp_path):
    # annotated as 64x64 but the file is 128x128: its boxes in 128-pixel coordinates fall outside 64x64, which is a
    # consequence of the size, not a second problem to chase
    image = {"id": 1, "file_name": "a.png", "width": 64, "height": 64}
    annotations = [box_annotation(1, 1, [80, 80, 20, 20]), box_annotation(2, 1, [70, 90, 10, 10]),
                   box_annotation(3, 1, [10, 10, 20, 20])]
    data = _coco_data(tmp_path, images=[image], annotations=annotations, make_images=False)
    write_image(tmp_path / "imgs" / "a.png", 128, 128)
    assert _only_problem(data) == (
        f"{tmp_path / 'imgs' / 'a.png'}: image is 128x128 but the annotations were made for 64x64 (2 of its boxes "
        "lie outside 64x64, not listed separately); were the images resized after annotating?"
    )


def test_boxes_outside_a_correctly_sized_image_are_still_listed(tmp_path):
    images = [_IMAGE, {"id": 2, "file_name": "b.png", "width": 640, "height": 480}]
    annotations = [box_annotation(1, 1, [70, 10, 5, 5]), box_annotation(2, 2, [1, 1, 5, 5])]
    data = _coco_data(tmp_path, images=images, annotations=annotations, make_images=False)
    write_image(tmp_path / "imgs" / "a.png", 64, 48)
    write_image(tmp_path / "imgs" / "b.png", 64, 48)
    problems = set(_problems(data))
    assert len(problems) == 2
    assert any(p.endswith("annotation 1: box xyxy (70, 10, 75, 15) lies completely outside the 64x48 image")
               for p in problems)
    assert any("b.png: image is 64x48 but the annotations were made for 640x480; were" in p for p in problems)


def test_missing_image_folder_is_one_problem(tmp_path):
    images = [{**_IMAGE, "id": i, "file_name": f"{i}.png"} for i in range(1, 6)]
    images.append({"id": 9, "file_name": "9.png"})  # no size: read from the file, which is missing too
    annotations = [box_annotation(i, i, [2, 2, 10, 10]) for i in range(1, 6)]
    ann = write_coco(tmp_path / "annotations", images, annotations, name="train.json", make_images=False)
    entry = {"images": "no_such_folder", "annotations": f"annotations/{ann.name}"}
    (tmp_path / "data.yaml").write_text(json.dumps({"train": entry}))
    assert _only_problem(tmp_path / "data.yaml") == (
        f"{tmp_path / 'no_such_folder'}: image folder does not exist (it should hold images listed in {ann})"
    )


def test_val_split_reports_an_unreadable_training_file(tmp_path):
    # COCO splits take their classes from the training file: checking only val must still say why there are none
    data = _coco_data(tmp_path)
    val = tmp_path / "imgs" / "val.json"
    val.write_text((tmp_path / "imgs" / "train.json").read_text())
    config = json.loads(data.read_text())
    config["val"]["annotations"] = "imgs/val.json"
    data.write_text(json.dumps(config))
    (tmp_path / "imgs" / "train.json").write_text('{"images": [')
    with pytest.raises(DatasetError) as info:
        check_dataset(data, ["val"], progress=False)
    assert info.value.problems[0].startswith(f"{tmp_path / 'imgs' / 'train.json'}: invalid JSON (line 1")


def test_unknown_category(tmp_path):
    data = _coco_data(tmp_path, annotations=[box_annotation(17, 1, [1, 1, 5, 5], category_id=9)])
    assert _only_problem(data) == (
        f"{tmp_path / 'imgs' / 'train.json'} annotation 17: category/class id 9 does not exist (known ids: 1)"
    )


def test_unknown_image(tmp_path):
    data = _coco_data(tmp_path, annotations=[box_annotation(4, 99, [1, 1, 5, 5])])
    json_file = tmp_path / "imgs" / "train.json"
    assert _only_problem(data) == f"{json_file} annotation 4: image_id 99 is not one of the file's images"


def test_invalid_json(tmp_path):
    data = _coco_data(tmp_path)
    (tmp_path / "imgs" / "train.json").write_text('{"images": [}')
    problem = _only_problem(data)
    assert problem.startswith(f"{tmp_path / 'imgs' / 'train.json'}: invalid JSON (line 1, column 13")


def test_wrong_fields(tmp_path):
    data = _coco_data(tmp_path, annotations=[box_annotation(3, 1, [1, 1, 5])])
    assert _only_problem(data) == (
        f"{tmp_path / 'imgs' / 'train.json'} annotation 3: "
        "'bbox' must be 4 numbers [x, y, width, height], got [1, 1, 5]"
    )
    (tmp_path / "imgs" / "train.json").write_text(json.dumps({"images": [], "categories": []}))
    assert _only_problem(data) == (
        f"{tmp_path / 'imgs' / 'train.json'}: not a COCO annotation file: 'annotations' must be a list"
    )


def test_box_completely_outside_the_image(tmp_path):
    data = _coco_data(tmp_path, annotations=[box_annotation(8, 1, [70, 10, 5, 5])])
    assert _only_problem(data) == (
        f"{tmp_path / 'imgs' / 'train.json'} annotation 8: "
        "box xyxy (70, 10, 75, 15) lies completely outside the 64x48 image"
    )


def test_yolo_wrong_number_of_values(tmp_path):
    data = write_yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2\n"}, ["x"])
    label = tmp_path / "labels" / "train" / "a.txt"
    assert _only_problem(data) == f"{label}:2: expected 5 values 'class cx cy w h', got 4"


def test_negative_box_size_is_a_problem(tmp_path):
    # a negative width is a malformed box (like a NaN), not an empty one: dropping it would lose an object quietly
    data = _coco_data(tmp_path, annotations=[box_annotation(8, 1, [10, 10, -20, 30])])
    assert _only_problem(data) == (
        f"{tmp_path / 'imgs' / 'train.json'} annotation 8: box xyxy (10, 10, -10, 40) has a negative width (-20)"
    )
    data = write_yolo(tmp_path / "yolo", {"a": "0 0.5 0.5 -0.25 -0.5\n"}, ["x"])
    label = tmp_path / "yolo" / "labels" / "train" / "a.txt"
    assert _only_problem(data) == (
        f"{label}:1: box xyxy (40, 36, 24, 12) has a negative width (-16) and height (-24)"
    )


def test_yolo_label_file_with_byte_order_mark(tmp_path):
    data = write_yolo(tmp_path, {"a": "\ufeff0 0.5 0.5 0.25 0.5\n"}, ["x"])
    assert (tmp_path / "labels" / "train" / "a.txt").read_bytes().startswith(b"\xef\xbb\xbf")
    spec = resolve_dataset(data)
    assert check_dataset(spec, progress=False).ok
    assert spec.build("train")[0][1]["boxes"].tolist() == [[24, 12, 40, 36]]


def test_coco_file_with_byte_order_mark(tmp_path):
    data = _coco_data(tmp_path)
    ann = tmp_path / "imgs" / "train.json"
    ann.write_bytes(b"\xef\xbb\xbf" + ann.read_bytes())
    assert check_dataset(data, progress=False).splits["train"].boxes == 1


def test_yolo_non_numeric_value(tmp_path):
    data = write_yolo(tmp_path, {"a": "0 0.5 abc 0.2 0.2\n"}, ["x"])
    label = tmp_path / "labels" / "train" / "a.txt"
    assert _only_problem(data) == f"{label}:1: non-numeric value 'abc' (expected 'class cx cy w h')"


def test_yolo_class_out_of_range(tmp_path):
    data = write_yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.2 0.2\n"}, ["x", "y"])
    label = tmp_path / "labels" / "train" / "a.txt"
    assert _only_problem(data) == f"{label}:2: category/class id 5 does not exist (known ids: 0, 1)"


def test_yolo_pixel_coordinates(tmp_path):
    data = write_yolo(tmp_path, {"a": "0 32 24 10 10\n"}, ["x"])
    label = tmp_path / "labels" / "train" / "a.txt"
    assert _only_problem(data) == f"{label}:1: coordinates are not normalised to 0..1 (pixel values?)"


def test_yolo_labels_not_found(tmp_path):
    data = write_yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n"}, ["x"])
    (tmp_path / "labels" / "train" / "a.txt").unlink()
    assert "none of the 1 images has a label file" in _only_problem(data)


def test_one_image_id_for_two_files(tmp_path):
    data = _coco_data(tmp_path, images=[_IMAGE, {**_IMAGE, "file_name": "b.png"}])
    assert _only_problem(data) == f"{tmp_path / 'imgs' / 'train.json'} image 1: id used for both 'a.png' and 'b.png'"


def test_every_problem_is_listed_and_the_data_set_refuses_to_build(tmp_path):
    annotations = [
        box_annotation(1, 1, [1, 1, 5, 5], category_id=9),
        box_annotation(2, 7, [1, 1, 5, 5]),
        box_annotation(3, 1, [100, 100, 5, 5]),
    ]
    data = _coco_data(tmp_path, annotations=annotations, make_images=False)
    assert len(set(_problems(data))) == 4  # three annotations + the missing image
    with pytest.raises(DatasetError, match="3 problem"):
        resolve_dataset(data).build("train")


# ---- repairs ------------------------------------------------------------------------------------------------------


def test_repairs_are_reported_and_used_by_the_data_set(tmp_path):
    annotations = [
        box_annotation(1, 1, [-5, 40, 20, 20], category_id=7),  # clipped to (0, 40, 15, 48)
        box_annotation(2, 1, [10, 10, 0, 5], category_id=7),  # zero width: dropped
        box_annotation(3, 1, [10, 10, 4, 4], category_id=90),
    ]
    images = [_IMAGE, _IMAGE]  # a repeated image entry
    categories = [{"id": 7, "name": "kite"}, {"id": 90, "name": "zebra"}]
    data = _coco_data(tmp_path, images=images, annotations=annotations, categories=categories)
    spec = resolve_dataset(data)
    report = check_dataset(spec, progress=False)
    text = "\n".join(report.repairs)
    assert "category ids 7, 90 mapped to contiguous labels 0..1" in text
    assert "train: 1 x box clipped to its image (e.g. " in text and "annotation 1" in text
    assert "train: 1 x zero-area box dropped" in text and "annotation 2" in text
    assert "train: 1 x repeated image entry ignored" in text
    assert report.splits["train"].boxes == 2 and report.splits["train"].images == 1
    assert "Data set OK." in report.summary()
    _, target = spec.build("train")[0]
    assert target["boxes"].tolist() == [[0, 40, 15, 48], [10, 10, 14, 14]]
    assert target["labels"].tolist() == [0, 1]
    assert report.indexes["train"] is spec.index("train")


def test_exif_rotation_ignored_when_boxes_were_drawn_on_stored_pixels(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _coco_data(tmp_path, images=[{**_IMAGE, "file_name": "r.jpg"}], make_images=False)
    Image.new("RGB", (64, 48)).save(tmp_path / "imgs" / "r.jpg", exif=exif.tobytes())
    spec = resolve_dataset(data)
    report = check_dataset(spec, progress=False)
    assert any("EXIF rotation not applied" in line and "r.jpg" in line for line in report.repairs)
    assert spec.build("train")[0][0].shape == (3, 48, 64)


def test_yolo_polygon_gives_its_box_and_its_mask(tmp_path):
    data = write_yolo(tmp_path, {"a": "0 0.25 0.25 0.75 0.25 0.5 0.75\n"}, ["x"])
    spec = resolve_dataset(data)
    report = check_dataset(spec, progress=False)
    assert report.ok and not report.repairs and "1 boxes (1 with masks)" in report.summary()
    assert spec.build("train")[0][1]["boxes"].tolist() == [[16, 12, 48, 36]]
    assert "masks" not in spec.build("train")[0][1]  # a detector does not read them
    mask = spec.build("train", masks=True)[0][1]["masks"]
    assert mask.shape == (1, 48, 64) and mask[0, 20, 32] == 1 and mask[0, 30, 18] == 0  # inside / outside the triangle


def test_summary_of_a_clean_data_set(synthetic_pair):
    report = check_dataset(synthetic_pair[1], progress=False)
    assert report.ok and report.format == "yolo"
    summary = report.summary()
    assert "3 classes: 0 circle, 1 square, 2 triangle" in summary
    assert "train: 12 images" in summary and summary.endswith("Data set OK.")


def test_unreadable_image_with_a_label_file_is_not_said_to_lack_one(tmp_path):
    # the label files of images that cannot be read were not counted: "none of the 1 images has a label file"
    data = write_yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n"}, ["x"])
    (tmp_path / "images" / "train" / "a.png").write_bytes(b"")
    problems = _problems(data)
    assert any(p.startswith(str(tmp_path / "images" / "train" / "a.png")) for p in problems), problems
    assert not any("has a label file" in p for p in problems), problems
