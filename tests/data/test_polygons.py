"""Instance masks in the data: rasterising polygons and RLE (dfine.data.polygons), reading them from COCO and YOLO-seg
files, checking them, and carrying them through the training transforms, the mosaic and mixup."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from datahelpers import box_annotation, write_coco, write_yolo
from faster_coco_eval.core import mask as coco_mask
from torchvision import tv_tensors

from dfine.data import EvalTransforms, TrainTransforms, check_dataset, make_synthetic_dataset, resolve_dataset
from dfine.data.mosaic import Mosaic, mixup
from dfine.data.polygons import crosses_itself, polygon_parts, rasterize
from dfine.errors import DatasetError

_IMAGE = {"id": 1, "file_name": "a.png", "width": 64, "height": 48}


def _coco_yaml(tmp_path, annotations, images=None):
    ann = write_coco(tmp_path / "imgs", images or [_IMAGE], annotations, name="train.json")
    entry = {"images": "imgs", "annotations": f"imgs/{ann.name}"}
    (tmp_path / "data.yaml").write_text(json.dumps({"train": entry, "val": entry}))
    return tmp_path / "data.yaml", ann


def _polygon_annotation(ann_id, polygon, **extra):
    xs, ys = polygon[0::2], polygon[1::2]
    box = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    return box_annotation(ann_id, 1, box, segmentation=[polygon], **extra)


# ---- rasterising ------------------------------------------------------------------------------------------------

def test_rasterize_gives_cocos_own_pixels() -> None:
    """Rasterising on the polygon's box and pasting gives what COCO's rasteriser gives on the whole image, also for
    polygons partly outside it and for several parts: up to a pixel of floating-point rounding, rarely."""
    rng = np.random.default_rng(0)
    differing = 0
    for _ in range(100):
        parts = [rng.uniform(-20, 140, size=2 * int(rng.integers(3, 9))).tolist()
                 for _ in range(int(rng.integers(1, 3)))]
        expected = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(parts, 100, 120)))
        difference = int((rasterize(parts, 100, 120) != expected).sum())
        assert difference <= 2 and expected.sum() > 100
        differing += difference > 0
    assert differing <= 5
    assert not rasterize([[200, 200, 210, 200, 205, 210]], 100, 120).any()  # entirely outside


def test_rasterize_rle_compressed_and_not() -> None:
    mask = np.zeros((30, 40), dtype=np.uint8)
    mask[5:12, 8:30] = 1
    compressed = coco_mask.encode(np.asfortranarray(mask))
    as_text = {"size": [30, 40], "counts": compressed["counts"].decode()}
    counts, flat = [], mask.flatten(order="F")  # uncompressed: run lengths, column-major, background first
    value, run = 0, 0
    for pixel in flat:
        if pixel != value:
            counts.append(run)
            value, run = pixel, 0
        run += 1
    counts.append(run)
    for rle in (as_text, {"size": [30, 40], "counts": counts}):
        assert np.array_equal(rasterize(rle, 30, 40), mask)
    with pytest.raises(ValueError, match="another|size"):
        rasterize(as_text, 40, 30)


def test_polygon_parts_and_self_crossing() -> None:
    assert polygon_parts([[0, 0, 4, 0, 4, 4], [1, 1, 2, 2]]) == ([[0.0, 0.0, 4.0, 0.0, 4.0, 4.0]],
                                                                  "a polygon with fewer than 3 points (2)")
    assert polygon_parts([[0, 0, 4, "x", 4, 4]])[1] == "a polygon that is not a list of finite numbers"
    assert crosses_itself([[0, 0, 10, 10, 10, 0, 0, 10]])  # a bow tie
    assert not crosses_itself([[0, 0, 10, 0, 10, 10, 0, 10]])  # a square
    assert not crosses_itself([[0, 0, 10, 0, 10, 10, 5, 10, 5, 0, 0, 10]])  # edges that only touch do not cross


# ---- reading and checking ---------------------------------------------------------------------------------------

def test_coco_polygons_rle_crowd_and_ground_truth(tmp_path) -> None:
    crowd = coco_mask.encode(np.asfortranarray(np.pad(np.ones((10, 10), np.uint8), ((30, 8), (50, 4)))))
    crowd_rle = {"size": [48, 64], "counts": crowd["counts"].decode()}
    data, _ = _coco_yaml(tmp_path, [
        _polygon_annotation(1, [4, 4, 30, 4, 30, 20, 4, 20]),
        box_annotation(2, 1, [50, 30, 10, 10], iscrowd=1, segmentation=crowd_rle),
        box_annotation(3, 1, [40, 2, 6, 6], iscrowd=1),  # a crowd box: needs no mask
    ])
    spec = resolve_dataset(data)
    report = check_dataset(spec, ["train"], progress=False, masks=True)
    assert report.ok and report.splits["train"].masks == 1 and report.splits["train"].crowd == 2
    dataset = spec.build("train", masks=True)
    _, target = dataset[0]
    assert target["masks"].shape == (1, 48, 64) and int(target["masks"].sum()) == 26 * 16  # crowd not trained on
    truth = dataset.coco_ground_truth()["annotations"]
    assert truth[0]["segmentation"] == [[4, 4, 30, 4, 30, 20, 4, 20]] and truth[1]["segmentation"] == crowd_rle
    assert truth[2]["segmentation"] == [[40.0, 2.0, 46.0, 2.0, 46.0, 8.0, 40.0, 8.0]]  # the crowd box


def test_coco_mask_problems_stop_segmentation_only(tmp_path) -> None:
    data, ann = _coco_yaml(tmp_path, [
        _polygon_annotation(1, [4, 4, 30, 4, 30, 20, 4, 20]),
        box_annotation(2, 1, [40, 30, 10, 10]),  # no segmentation in a data set with masks
        box_annotation(3, 1, [40, 2, 6, 6], segmentation=[[40, 2, 46, 2]]),  # two points only
        box_annotation(4, 1, [1, 30, 6, 6], segmentation={"size": [10, 10], "counts": [100]}),  # another size
    ])
    spec = resolve_dataset(data)
    with pytest.raises(DatasetError) as info:
        check_dataset(spec, ["train"], progress=False, masks=True)
    problems = info.value.problems
    assert len(problems) == 3 and all(str(ann) in line for line in problems)
    assert any("box but no polygon or mask" in line and "annotation 2" in line for line in problems)
    assert any("fewer than 3 points" in line and "annotation 3" in line for line in problems)
    assert any("another image size" in line and "annotation 4" in line for line in problems)
    # the same data set trains a detector, and the check says why it would not train segmentation
    report = check_dataset(spec, ["train"], progress=False)
    assert report.ok and sum("instance segmentation refuses these" in line for line in report.warnings) == 3
    assert check_dataset(spec, ["train"], progress=False, masks=False).warnings == []
    spec.build("train")
    with pytest.raises(DatasetError, match="instance masks cannot be trained on"):
        spec.build("train", masks=True)


def test_polygons_outside_their_image(tmp_path) -> None:
    data, ann = _coco_yaml(tmp_path, [
        _polygon_annotation(1, [4, 4, 30, 4, 30, 20, 4, 20]),
        _polygon_annotation(2, [50, 30, 70, 30, 70, 40, 50, 40]),  # 6 px past the right edge: clipped
        box_annotation(3, 1, [10, 30, 10, 10], segmentation=[[80, 60, 90, 60, 90, 70]]),  # beyond the image
        box_annotation(4, 1, [30, 30, 10, 10], segmentation=[[30, 30, 35, 35, 40, 40]]),  # on a line: no area
    ])
    spec = resolve_dataset(data)
    with pytest.raises(DatasetError) as info:
        check_dataset(spec, ["train"], progress=False, masks=True)
    (problem,) = info.value.problems
    assert problem.startswith(f"{ann}: 2 x polygons that cover no pixel of their image")
    assert "a.png object 3" in problem and "a.png object 4" in problem and "\n" not in problem
    report = check_dataset(spec, ["train"], progress=False)
    assert any("reaching outside their image" in w and "a.png object 2" in w for w in report.warnings)
    assert any("cover no pixel" in w and "instance segmentation refuses these" in w for w in report.warnings)


def test_yolo_seg_lines_and_their_problems(tmp_path) -> None:
    data = write_yolo(tmp_path, {
        "a": "0 0.1 0.1 0.5 0.1 0.5 0.5 0.1 0.5\n0 0.7 0.7 0.2 0.2\n",  # a polygon, then a box-only line
        "b": "0 0.1 0.1 0.5 0.1 0.5 0.5 0.1\n",  # an odd number of coordinates
        "c": "0 0.1 0.1 0.9 0.9 0.9 0.1 0.1 0.9\n",  # a bow tie
    }, ["x"])
    with pytest.raises(DatasetError) as info:
        check_dataset(data, ["train"], progress=False)
    odd = f"{tmp_path / 'labels' / 'train' / 'b.txt'}:1: a polygon line 'class x1 y1 x2 y2 x3 y3 ...' with an odd "
    assert [p for p in info.value.problems if "b.txt:1" in p] == [odd + "number of coordinates (7)"]
    (tmp_path / "labels" / "train" / "b.txt").write_text("")
    with pytest.raises(DatasetError) as info:
        check_dataset(data, ["train"], progress=False, masks=True)
    assert len(info.value.problems) == 1 and "a.txt:2" in info.value.problems[0]
    report = check_dataset(data, ["train"], progress=False)
    assert any("cross themselves" in line and "c.png object 1" in line for line in report.warnings)


def test_segmentation_of_a_data_set_without_masks_is_refused(tmp_path) -> None:
    data = write_yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n"}, ["x"])
    with pytest.raises(DatasetError) as info:
        check_dataset(data, ["train"], progress=False, masks=True)
    assert "no object has a polygon or mask" in info.value.problems[0]


# ---- transforms -------------------------------------------------------------------------------------------------

def _mask_box(mask: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    return resolve_dataset(make_synthetic_dataset(root, num_train=12, num_val=2, image_size=(96, 128), seed=3,
                                                  empty_fraction=0.0, image_format="png", masks=True))


def test_masks_follow_their_boxes_through_the_training_transforms(seg_data) -> None:
    # squares fill their boxes, so the mask's own box must stay the object's box through zoom-out, IoU crop, flip,
    # resize and sanitize
    dataset = seg_data.build("train", TrainTransforms(64, seed=1), masks=True)
    seen = 0
    for i in range(len(dataset)):
        image, target = dataset[i]
        masks, boxes = target["masks"], target["boxes"]
        assert type(masks) is torch.Tensor and masks.dtype == torch.uint8
        assert masks.shape == (len(boxes), 64, 64) and image.shape == (3, 64, 64)
        for mask, box, label in zip(masks, boxes, target["class_labels"], strict=True):
            if label == 1 and mask.any():
                cx, cy, w, h = (box * 64).tolist()
                assert torch.allclose(_mask_box(mask), torch.tensor([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]),
                                      atol=1.5)
                seen += 1
    assert seen >= 3
    _, target = seg_data.build("val", EvalTransforms(64), masks=True)[0]
    assert target["masks"].shape[-2:] == (64, 64)


def test_mosaic_and_mixup_carry_the_masks(seg_data) -> None:
    dataset = seg_data.build("train", masks=True)
    torch.manual_seed(0)
    mosaic = Mosaic(dataset.load_item, len(dataset), tile_size=48, degrees=0.0, translate=(0.0, 0.0),
                    scale=(1.0, 1.0))
    image, target = mosaic(*dataset.load_item(0))
    masks, boxes = target["masks"], target["boxes"]
    assert isinstance(masks, tv_tensors.Mask) and masks.shape == (len(boxes), *image.shape[-2:])
    for mask, box in zip(masks, boxes, strict=True):  # every mask inside its box, and close to it
        found = _mask_box(mask)
        assert (found[:2] >= box[:2] - 1).all() and (found[2:] <= box[2:] + 1).all()
        assert (found - box).abs().max() <= 0.35 * (box[2:] - box[:2]).max()
    # rotated, each box is its mask's extent (the affine's box of a rotated box would be wider)
    rotating = Mosaic(dataset.load_item, len(dataset), tile_size=48, degrees=10.0, translate=(0.1, 0.1),
                      scale=(0.8, 1.2))
    for i in range(4):
        _, target = rotating(*dataset.load_item(i))
        for mask, box in zip(target["masks"], target["boxes"], strict=True):
            if mask.any():
                assert torch.equal(_mask_box(mask), box.as_subclass(torch.Tensor))
            else:
                assert (box[2:] <= box[:2]).any()
    labels = [{"class_labels": torch.tensor([0]), "boxes": torch.rand(1, 4), "masks": torch.ones(1, 8, 8)},
              {"class_labels": torch.tensor([1, 2]), "boxes": torch.rand(2, 4), "masks": torch.zeros(2, 8, 8)}]
    _, merged = mixup(torch.rand(2, 3, 8, 8), labels, 0.5)
    assert [len(t["masks"]) for t in merged] == [3, 3]
    assert merged[0]["masks"][0].all() and not merged[0]["masks"][1:].any()
