"""COCO files from other tools: boxes computed from ``segmentation`` when ``bbox`` is missing, Windows file names."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from datahelpers import box_annotation, write_coco, write_image

from dfine.data import check_dataset
from dfine.data.coco import load_coco_index
from dfine.data.masks import SegmentationError, rle_box, segmentation_box
from dfine.errors import DatasetError

_IMAGE = {"id": 1, "file_name": "a.png", "width": 64, "height": 48}
_REPAIR = "box computed from its segmentation"


def _segment(ann_id: int, segmentation: Any, **extra: Any) -> dict[str, Any]:
    return {"id": ann_id, "image_id": 1, "category_id": 1, "segmentation": segmentation, **extra}


def _load(tmp_path: Path, annotations: list[dict[str, Any]], images: list[dict[str, Any]] | None = None):
    ann_file = write_coco(tmp_path, images or [_IMAGE], annotations)
    return load_coco_index(ann_file, tmp_path), ann_file


# ---- reference RLE encoders (written from the COCO format description, independent of dfine.data.masks) --------


def _reference_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed RLE: alternating background / foreground run lengths over the column-major pixels."""
    counts, current, run = [], 0, 0
    for value in mask.flatten(order="F"):
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return counts


def _reference_string(counts: list[int]) -> str:
    """Compressed RLE counts, as pycocotools' ``rleToString`` writes them."""
    out = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            group = x & 0x1F
            x >>= 5
            more = x != -1 if group & 0x10 else x != 0
            out.append(chr((group | (0x20 if more else 0)) + 48))
    return "".join(out)


def _expected_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    rows, cols = np.nonzero(mask)
    return float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)


def _random_masks(count: int = 40) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    masks = []
    for i in range(count):
        height, width = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        mask = np.zeros((height, width), dtype=np.uint8)
        if i % 3 == 0:  # sparse scattered pixels: runs wrap from one column into the next
            mask[rng.random((height, width)) < 0.1] = 1
        else:
            y0, x0 = int(rng.integers(0, height)), int(rng.integers(0, width))
            mask[y0 : int(rng.integers(y0, height)) + 1, x0 : int(rng.integers(x0, width)) + 1] = 1
        if not mask.any():
            mask[height - 1, width - 1] = 1
        masks.append(mask)
    # a run that ends at the bottom of one column and goes on at the top of the next (wraps: all rows covered)
    wrap = np.zeros((10, 6), dtype=np.uint8)
    wrap[8:, 2] = 1
    wrap[:1, 3] = 1
    masks.append(wrap)
    return masks


# ---- boxes from segmentations ----------------------------------------------------------------------------------


def test_polygon_only_annotations_get_the_box_of_all_their_points(tmp_path):
    index, ann_file = _load(
        tmp_path,
        [
            _segment(1, [[10, 10, 30, 8, 20, 25], [5, 12, 9, 14, 7, 30]]),  # two polygons: the box spans both
            _segment(2, [[40, 20, 50, 20, 50, 40, 40, 40]], bbox=[]),  # an empty bbox next to a polygon
            _segment(3, [[1, 2, 3, 2, 3, 4]], bbox=None),
        ],
    )
    assert index.problems == []
    assert index.records[0].boxes.tolist() == [[5, 8, 30, 30], [40, 20, 50, 40], [1, 2, 3, 4]]
    # one repair line with the count, not one line per annotation
    assert index.repairs.lines() == [
        f"3 x {_REPAIR} (e.g. {ann_file} annotation 1; {ann_file} annotation 2; {ann_file} annotation 3)"
    ]


def test_a_valid_bbox_is_used_as_is_even_when_the_segmentation_disagrees(tmp_path):
    index, _ = _load(tmp_path, [box_annotation(1, 1, [2, 3, 10, 20], segmentation=[[30, 30, 40, 30, 40, 40]])])
    assert index.problems == [] and index.repairs.counts == {}
    assert index.records[0].boxes.tolist() == [[2, 3, 12, 23]]


def test_a_malformed_bbox_is_not_replaced_by_the_segmentation(tmp_path):
    index, ann_file = _load(tmp_path, [box_annotation(4, 1, [1, 1, 5], segmentation=[[1, 1, 9, 1, 9, 9]])])
    assert index.problems == [f"{ann_file} annotation 4: 'bbox' must be 4 numbers [x, y, width, height], got [1, 1, 5]"]


def test_uncompressed_rle_crowd_region(tmp_path):
    mask = np.zeros((48, 64), dtype=np.uint8)
    mask[10:40, 10:12] = 1
    mask[5, 30] = 1
    rle = {"size": [48, 64], "counts": _reference_counts(mask)}
    index, ann_file = _load(tmp_path, [_segment(1, rle, iscrowd=1, area=61)])
    assert index.problems == []
    record = index.records[0]
    assert record.boxes.tolist() == [list(_expected_box(mask))] == [[10, 5, 31, 40]]
    assert record.iscrowd.tolist() == [True] and record.areas.tolist() == [61]
    assert index.repairs.counts == {_REPAIR: 1}


def test_compressed_rle(tmp_path):
    mask = np.zeros((48, 64), dtype=np.uint8)
    mask[20:30, 33:60] = 1
    rle = {"size": [48, 64], "counts": _reference_string(_reference_counts(mask))}
    index, _ = _load(tmp_path, [_segment(1, rle, iscrowd=1)])
    assert index.problems == []
    assert index.records[0].boxes.tolist() == [[33, 20, 60, 30]]
    assert index.repairs.counts == {_REPAIR: 1}


@pytest.mark.parametrize("compressed", [False, True])
def test_rle_box_matches_the_mask(compressed):
    for mask in _random_masks():
        counts = _reference_counts(mask)
        rle = {"size": list(mask.shape), "counts": _reference_string(counts) if compressed else counts}
        assert rle_box(rle) == _expected_box(mask), mask


def test_rle_decoding_agrees_with_faster_coco_eval():
    mask_api = pytest.importorskip("faster_coco_eval.core.mask")
    for mask in _random_masks():
        encoded = mask_api.encode(np.asfortranarray(mask))
        counts = encoded["counts"].decode("ascii")
        assert counts == _reference_string(_reference_counts(mask))  # the test's own encoder is right, too
        x, y, w, h = mask_api.toBbox(encoded).tolist()
        assert segmentation_box({"size": list(mask.shape), "counts": counts}) == (x, y, x + w, y + h)
        # pycocotools' own conversion of uncompressed counts to the string form
        converted = mask_api.frPyObjects({"size": list(mask.shape), "counts": _reference_counts(mask)}, *mask.shape)
        assert converted["counts"].decode("ascii") == counts


@pytest.mark.parametrize(
    ("segmentation", "reason"),
    [
        ([], "the segmentation is empty (no polygon points)"),
        ([[]], "the segmentation is empty (no polygon points)"),
        ({"size": [48, 64], "counts": [3072]}, "the segmentation is empty (the RLE mask has no foreground pixel)"),
        ({"size": [48, 64], "counts": ""}, "the segmentation is empty (the RLE mask has no foreground pixel)"),
        ([[1, 2, 3, 4, 5]], "polygon 0 has an odd number of coordinates (5)"),
        ([[1, 2, 3, 4], "5 6"], "polygon 1 must be a list of numbers [x1, y1, x2, y2, ...]"),
        ([1, 2, 3, 4, 5, 6], "polygon 0 must be a list of numbers [x1, y1, x2, y2, ...]"),
        ({"size": [48, 64], "counts": [3000, 100]}, "RLE 'counts' cover 3100 pixels, more than the 48x64 mask"),
        ({"size": [48, 64], "counts": [10, -2, 5]}, "RLE 'counts' must be a list of non-negative integers"),
        ({"size": [48], "counts": [10, 2]}, "RLE 'size' must be [height, width] (two positive integers), got [48]"),
        ({"size": [48, 64], "counts": "0 1"}, "compressed RLE 'counts' has an invalid character ' '"),
        ({"size": [48, 64], "counts": "Q"}, "compressed RLE 'counts' ends in the middle of a number"),
        ({"size": [48, 64], "counts": "0@"}, "compressed RLE 'counts' decodes to a negative run length"),
        ("polygon", "'segmentation' must be a list of polygons or an RLE object"),
    ],
)
def test_empty_or_malformed_segmentation_is_a_problem_naming_the_annotation(tmp_path, segmentation, reason):
    index, ann_file = _load(tmp_path, [_segment(7, segmentation)])
    assert len(index.problems) == 1, index.problems
    prefix = f"{ann_file} annotation 7: no 'bbox', and none can be computed from its 'segmentation': "
    assert index.problems[0].startswith(prefix + reason), index.problems[0]
    with pytest.raises(SegmentationError):
        segmentation_box(segmentation)


def test_missing_bbox_without_segmentation_is_still_a_problem(tmp_path):
    index, ann_file = _load(tmp_path, [{"id": 2, "image_id": 1, "category_id": 1}])
    assert index.problems == [f"{ann_file} annotation 2: 'bbox' must be 4 numbers [x, y, width, height], got None"]


def test_rle_made_for_another_image_size_is_a_problem(tmp_path):
    mask = np.zeros((64, 48), dtype=np.uint8)  # height and width swapped
    mask[3:9, 4:6] = 1
    index, ann_file = _load(tmp_path, [_segment(5, {"size": [64, 48], "counts": _reference_counts(mask)})])
    assert index.problems == [
        f"{ann_file} annotation 5: no 'bbox', and its RLE 'segmentation' has size [64, 48] but the image is "
        "[48, 64] ([height, width])"
    ]


def test_check_dataset_reports_problems_together_without_a_traceback(tmp_path):
    annotations = [_segment(1, [[1, 1, 9, 1, 9, 9]]), _segment(2, []), _segment(3, {"counts": "x"})]
    ann_file = write_coco(tmp_path / "imgs", [_IMAGE], annotations, name="train.json")
    entry = {"images": "imgs", "annotations": "imgs/train.json"}
    (tmp_path / "data.yaml").write_text(json.dumps({"train": entry, "val": entry}))
    with pytest.raises(DatasetError) as info:
        check_dataset(tmp_path / "data.yaml", progress=False)
    problems = sorted(set(info.value.problems))
    assert [p.split(":")[0] for p in problems] == [f"{ann_file} annotation 2", f"{ann_file} annotation 3"]


# ---- Windows file names ----------------------------------------------------------------------------------------


def test_backslashes_in_file_name_are_path_separators(tmp_path):
    images = [{**_IMAGE, "file_name": "sub\\deeper\\a.png"}, {**_IMAGE, "id": 2, "file_name": "sub\\b.png"}]
    write_image(tmp_path / "sub" / "deeper" / "a.png", 64, 48)
    write_image(tmp_path / "sub" / "b.png", 64, 48)
    ann_file = write_coco(tmp_path, images, [box_annotation(1, 1, [1, 1, 5, 5])], make_images=False)
    index = load_coco_index(ann_file, tmp_path)
    assert index.problems == []
    assert [r.path for r in index.records] == [tmp_path / "sub" / "deeper" / "a.png", tmp_path / "sub" / "b.png"]
    assert [r.file_name for r in index.records] == ["sub/deeper/a.png", "sub/b.png"]
    assert index.repairs.counts == {"Windows '\\' separators in file_name read as '/'": 2}


def test_backslashes_in_file_name_of_a_missing_image_name_the_normalised_path(tmp_path):
    (tmp_path / "sub").mkdir()
    images = [{"id": 1, "file_name": "sub\\gone.png"}]  # no size: the file is probed while loading
    ann_file = write_coco(tmp_path, images, [], make_images=False)
    index = load_coco_index(ann_file, tmp_path)
    assert index.problems == [f"{tmp_path / 'sub' / 'gone.png'}: image file is missing (image 1 of {ann_file})"]


@pytest.mark.skipif(os.sep == "\\", reason="a backslash cannot be part of a file name on Windows")
def test_a_file_whose_name_contains_a_backslash_is_found_as_written(tmp_path):
    write_image(tmp_path / "odd\\name.png", 64, 48)
    ann_file = write_coco(tmp_path, [{**_IMAGE, "file_name": "odd\\name.png"}], [], make_images=False)
    index = load_coco_index(ann_file, tmp_path)
    assert index.problems == [] and index.repairs.counts == {}
    assert index.records[0].path == tmp_path / "odd\\name.png"


def test_absolute_upload_paths_are_found_by_name_in_the_image_folder(tmp_path):
    """Label Studio writes the server's upload path; CVAT on Windows a drive path. The export holds the files."""
    images = [{**_IMAGE, "file_name": "/data/upload/1/5b1c-a.png"},
              {**_IMAGE, "id": 2, "file_name": "C:\\Users\\me\\Pictures\\b.png"},
              {**_IMAGE, "id": 3, "file_name": "/data/upload/1/gone.png"}]
    write_image(tmp_path / "images" / "5b1c-a.png", 64, 48)
    write_image(tmp_path / "b.png", 64, 48)
    ann_file = write_coco(tmp_path, images, [box_annotation(1, 1, [1, 1, 5, 5])], make_images=False)
    index = load_coco_index(ann_file, tmp_path)
    # a name found nowhere is kept as written, so the data check reports that path as missing
    assert [r.path for r in index.records] == [tmp_path / "images" / "5b1c-a.png", tmp_path / "b.png",
                                               Path("/data/upload/1/gone.png")]
    assert [r.file_name for r in index.records] == ["images/5b1c-a.png", "b.png", "/data/upload/1/gone.png"]
    assert index.repairs.counts == {"absolute file_name not found, found by its name in the image folder": 2}


@pytest.mark.parametrize(("iscrowd", "crowd"), [("0", False), ("1", True), (0, False), (1.0, True), (None, False)])
def test_iscrowd_written_as_a_string_or_float_is_read_as_its_number(tmp_path, iscrowd, crowd: bool):
    index, _ = _load(tmp_path, [box_annotation(1, 1, [1, 2, 10, 10], iscrowd=iscrowd)])
    assert not index.problems
    assert index.records[0].iscrowd.tolist() == [crowd]


@pytest.mark.parametrize("iscrowd", ["yes", 2, -1, [1]])
def test_iscrowd_other_than_0_or_1_is_a_problem(tmp_path, iscrowd):
    index, ann_file = _load(tmp_path, [box_annotation(1, 1, [1, 2, 10, 10], iscrowd=iscrowd)])
    assert index.problems == [f"{ann_file} annotation 1: 'iscrowd' must be 0 or 1, got {iscrowd!r}"]


def test_a_bbox_number_too_large_for_a_float_is_a_problem(tmp_path):
    index, ann_file = _load(tmp_path, [box_annotation(1, 1, [10**400, 2, 10, 10])])
    assert len(index.problems) == 1 and index.problems[0].startswith(f"{ann_file} annotation 1: ")
    assert "infinite" in index.problems[0]


def test_a_folder_where_a_file_is_expected_and_a_file_where_a_folder_is(tmp_path: Path) -> None:
    # each was reported as missing ("annotation file is missing", "image file is missing", "image folder does not
    # exist") though it was there, of the other kind
    write_coco(tmp_path, [_IMAGE, {**_IMAGE, "id": 2, "file_name": "sub"}], [box_annotation(1, 1, [1, 1, 5, 5])],
               make_images=False)
    write_image(tmp_path / "a.png", 64, 48)
    (tmp_path / "sub").mkdir()
    data = tmp_path / "data.yaml"
    data.write_text("train: {images: ., annotations: instances.json}\n"
                    "val: {images: a.png, annotations: instances.json}\n"
                    "test: {images: ., annotations: .}\n")
    with pytest.raises(DatasetError) as error:
        check_dataset(data, progress=False)
    problems = error.value.problems
    assert f"{tmp_path / 'sub'}: is a folder, not an image file" in problems
    assert any(p.startswith(f"{tmp_path / 'a.png'}: is a file, not a folder") for p in problems), problems
    assert f"{tmp_path}: is a folder, not a COCO annotation file" in problems
