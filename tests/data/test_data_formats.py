"""COCO-JSON and YOLO-txt loading: item format, label mapping, ground truth, image conversions."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from datahelpers import box_annotation, write_coco, write_image
from PIL import Image
from torchvision import tv_tensors

from dfine.data import CocoDetection, YoloDetection, make_synthetic_dataset, resolve_dataset
from dfine.data.images import load_image


def test_both_formats_give_identical_items(synthetic_pair):
    coco_yaml, yolo_yaml = synthetic_pair
    coco, yolo = resolve_dataset(coco_yaml), resolve_dataset(yolo_yaml)
    assert (coco.format, yolo.format) == ("coco", "yolo")
    assert coco.names == yolo.names == ["circle", "square", "triangle"]
    for split in ("train", "val"):
        a, b = coco.build(split), yolo.build(split)
        assert len(a) == len(b) > 0
        empty = 0
        for i in range(len(a)):
            (image_a, target_a), (image_b, target_b) = a[i], b[i]
            assert isinstance(image_a, tv_tensors.Image) and image_a.dtype == torch.uint8
            assert image_a.shape == (3, 96, 128)
            assert torch.equal(image_a, image_b)
            assert isinstance(target_a["boxes"], tv_tensors.BoundingBoxes)
            assert target_a["boxes"].format == tv_tensors.BoundingBoxFormat.XYXY
            assert target_a["boxes"].canvas_size == (96, 128)
            torch.testing.assert_close(target_a["boxes"], target_b["boxes"], atol=1e-3, rtol=0)
            assert torch.equal(target_a["labels"], target_b["labels"])
            assert target_a["labels"].dtype == torch.int64
            assert target_a["image_id"] == target_b["image_id"] == i
            assert torch.equal(target_a["orig_size"], torch.tensor([96, 128]))
            empty += len(target_a["labels"]) == 0
        assert empty > 0 or split == "val"  # the fixture asks for 20% background images
        gt_a, gt_b = a.coco_ground_truth(), b.coco_ground_truth()
        assert (
            gt_a["categories"]
            == gt_b["categories"]
            == [{"id": 0, "name": "circle"}, {"id": 1, "name": "square"}, {"id": 2, "name": "triangle"}]
        )
        assert [im["id"] for im in gt_a["images"]] == [im["id"] for im in gt_b["images"]]
        np.testing.assert_allclose(
            [ann["bbox"] for ann in gt_a["annotations"]], [ann["bbox"] for ann in gt_b["annotations"]], atol=1e-3
        )


def test_synthetic_is_deterministic(tmp_path):
    first = make_synthetic_dataset(tmp_path / "a", 3, 1, (64, 64), "coco", seed=3, image_format="png")
    second = make_synthetic_dataset(tmp_path / "b", 3, 1, (64, 64), "coco", seed=3, image_format="png")
    for name in ("annotations/instances_train.json", "images/train/train_00002.png"):
        assert (first.parent / name).read_bytes() == (second.parent / name).read_bytes()
    other = make_synthetic_dataset(tmp_path / "c", 3, 1, (64, 64), "coco", seed=4, image_format="png")
    assert (other.parent / "annotations/instances_train.json").read_bytes() != (
        first.parent / "annotations/instances_train.json"
    ).read_bytes()


def test_category_ids_with_gaps_map_to_contiguous_labels(tmp_path):
    categories = [{"id": 90, "name": "zebra"}, {"id": 1, "name": "apple"}, {"id": 7, "name": "kite"}]
    images = [{"id": 5, "file_name": "a.png", "width": 64, "height": 48}]
    annotations = [
        box_annotation(1, 5, [0, 0, 10, 10], 90),
        box_annotation(2, 5, [5, 5, 10, 10], 1),
        box_annotation(3, 5, [20, 20, 10, 10], 7),
    ]
    dataset = CocoDetection(tmp_path, write_coco(tmp_path, images, annotations, categories))
    assert dataset.class_names == ["apple", "kite", "zebra"]
    assert dataset.category_ids == [1, 7, 90]
    assert dataset[0][1]["labels"].tolist() == [2, 0, 1]
    gt = dataset.coco_ground_truth()
    assert gt["categories"] == [{"id": 0, "name": "apple"}, {"id": 1, "name": "kite"}, {"id": 2, "name": "zebra"}]
    assert [a["category_id"] for a in gt["annotations"]] == [2, 0, 1]


def test_crowd_regions_stay_out_of_targets_but_in_ground_truth(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}]
    annotations = [box_annotation(10, 1, [0, 0, 10, 10], area=77.5), box_annotation(0, 1, [20, 20, 30, 20], iscrowd=1)]
    dataset = CocoDetection(tmp_path, write_coco(tmp_path, images, annotations))
    _, target = dataset[0]
    assert target["boxes"].tolist() == [[0, 0, 10, 10]]
    gt = dataset.coco_ground_truth()
    assert [(a["iscrowd"], a["bbox"]) for a in gt["annotations"]] == [(0, [0, 0, 10, 10]), (1, [20, 20, 30, 20])]
    assert gt["annotations"][0]["area"] == 77.5  # the file's area is kept
    assert gt["annotations"][1]["area"] == 600.0
    assert [a["id"] for a in gt["annotations"]] == [1, 2]  # renumbered: COCOeval mistakes id 0 for "unmatched"
    assert gt["images"] == [{"id": 1, "width": 64, "height": 48, "file_name": "a.png"}]


def test_ground_truth_evaluates_with_faster_coco_eval(synthetic_pair):
    faster_coco_eval = pytest.importorskip("faster_coco_eval")
    dataset = resolve_dataset(synthetic_pair[0]).build("val")
    gt = faster_coco_eval.COCO(dataset.coco_ground_truth())
    perfect = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in dataset.coco_ground_truth()["annotations"]
    ]
    evaluator = faster_coco_eval.COCOeval_faster(gt, gt.loadRes(perfect), "bbox", print_function=lambda *a: None)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_image_modes_become_rgb_uint8(tmp_path, mode):
    write_image(tmp_path / "img.png", 40, 30, mode=mode, value=200)
    images = [{"id": 1, "file_name": "img.png", "width": 40, "height": 30}]
    dataset = CocoDetection(tmp_path, write_coco(tmp_path, images, [], make_images=False))
    image, target = dataset[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.uint8
    assert abs(int(image[0, 0, 0]) - 200) <= 1
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


def _exif_rotated_jpeg(path, width, height):
    # Stored pixels width x height with orientation 6 (rotate 90): shown as height x width.
    image = Image.new("RGB", (width, height), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, width // 2, height))  # left half blue in the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes())
    path.write_bytes(buffer.getvalue())


def test_exif_orientation_applied_when_annotations_use_the_rotated_image(tmp_path):
    _exif_rotated_jpeg(tmp_path / "r.jpg", 64, 32)
    images = [{"id": 1, "file_name": "r.jpg", "width": 32, "height": 64}]
    dataset = CocoDetection(tmp_path, write_coco(tmp_path, images, [], make_images=False))
    image, target = dataset[0]
    assert image.shape == (3, 64, 32)
    assert image[2, 2, 16] > 200  # stored left half (blue) is the top after a 90 degree clockwise rotation
    assert target["orig_size"].tolist() == [64, 32]


def test_yolo_dataset_with_names_dict_and_image_list(tmp_path):
    for stem in ("a", "b"):
        write_image(tmp_path / "images" / f"{stem}.png", 64, 48)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("3 0.5 0.5 0.25 0.5\n\n")
    (tmp_path / "list.txt").write_text("./images/b.png\nimages/a.png\n")
    data = tmp_path / "data.yaml"
    data.write_text(json.dumps({"train": "list.txt", "val": "images", "names": {0: "cat", 3: "dog"}}))
    dataset = YoloDetection(data, "train")
    assert dataset.class_names == ["cat", "dog"] and dataset.category_ids == [0, 3]
    assert [dataset[i][1]["labels"].tolist() for i in range(2)] == [[1], []]  # a.png (class 3 -> label 1), b.png
    assert dataset[0][1]["boxes"].tolist() == [[24.0, 12.0, 40.0, 36.0]]
    assert dataset.coco_ground_truth()["images"][0]["file_name"] == "images/a.png"


def _tiff(path, array: np.ndarray):
    Image.fromarray(array).save(path)
    return path


@pytest.mark.parametrize(("values", "expected"), [
    ((200 / 255, 1.0), (200, 255)),  # float images in 0..1 (scientific / HDR tools)
    ((200.0, 100.0), (200, 100)),  # floats holding 8-bit values keep them
    ((250.0, 1250.0), (0, 255)),  # any other range is stretched from its minimum to its maximum
])
def test_32_bit_float_images_are_scaled_from_their_range(tmp_path, values, expected):
    array = np.full((30, 40), values[0], dtype=np.float32)
    array[:, 20:] = values[1]
    image = load_image(_tiff(tmp_path / "f.tif", array))
    assert image.shape == (3, 30, 40) and image.dtype == torch.uint8
    assert (int(image[0, 0, 0]), int(image[0, 0, 39])) == expected


def test_32_bit_integer_images_are_scaled_beyond_the_16_bit_range(tmp_path):
    array = np.full((30, 40), 20000, dtype=np.int32)
    array[:, 20:] = 25400
    assert load_image(_tiff(tmp_path / "small.tif", array))[0, 0, 39] == 255  # not 99, as if it were 16-bit
    array *= 10_000  # up to 254 million
    image = load_image(_tiff(tmp_path / "large.tif", array))
    assert (int(image[0, 0, 0]), int(image[0, 0, 39])) == (201, 255)
