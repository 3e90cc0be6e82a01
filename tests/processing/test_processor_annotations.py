"""DFineImageProcessor with COCO annotations and padding, against transformers' RT-DETR processors (test oracle)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dfine.errors import ConfigError, DFineError
from dfine.processing.processor import BatchFeature, DFineImageProcessor

transformers = pytest.importorskip("transformers")
from transformers import RTDetrImageProcessor  # noqa: E402

try:  # transformers 5 ships a PIL backend next to the torchvision one
    from transformers.models.rt_detr.image_processing_pil_rt_detr import RTDetrImageProcessorPil
except ImportError:  # pragma: no cover - older transformers
    RTDetrImageProcessorPil = None

SIZES = [(50, 60), (80, 40), (333, 517)]
LABEL_KEYS = ["image_id", "class_labels", "boxes", "area", "iscrowd", "orig_size"]


def _images(sizes=SIZES) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


def _annotations() -> list[dict]:
    """One image with every edge case, one without objects, one with ordinary boxes (for SIZES)."""
    first = [
        {"bbox": [10, 5, 20, 30], "category_id": 2, "area": 600.0, "iscrowd": 0},
        {"bbox": [-5, -5, 20, 20], "category_id": 1, "area": 400, "iscrowd": 0},  # clipped, area kept
        {"bbox": [55.5, 5.25, 20, 30], "category_id": 4, "area": 600.0},  # clipped on the right, no iscrowd key
        {"bbox": [70, 5, 20, 30], "category_id": 5, "area": 600.0},  # wholly outside: dropped
        {"bbox": [3, 3, 0, 5], "category_id": 6, "area": 0.0},  # no width: dropped
        {"bbox": [1, 1, 5, 5], "category_id": 7, "area": 25, "iscrowd": 1},  # crowd: dropped
    ]
    third = [
        {"bbox": [100.3, 20.7, 200.1, 150.9], "category_id": 0, "area": 12345.6},
        {"bbox": [0, 0, 517, 333], "category_id": 5, "area": 517 * 333},
    ]
    return [
        {"image_id": 3, "annotations": first},
        {"image_id": 9, "annotations": []},
        {"image_id": 11, "annotations": third},
    ]


def _oracles(**kwargs) -> dict:
    found = {"torchvision": RTDetrImageProcessor(**kwargs)}
    if RTDetrImageProcessorPil is not None:
        found["pil"] = RTDetrImageProcessorPil(**kwargs)
    return found


CONFIGS = [
    {},
    {"size": {"height": 320, "width": 480}},
    {"do_convert_annotations": False},
    {"do_resize": False, "do_pad": True},
    {"do_resize": False, "do_pad": True, "do_convert_annotations": False},
    {"do_resize": False, "do_pad": True, "pad_size": {"height": 400, "width": 600}},
    {"do_pad": True, "pad_size": {"height": 700, "width": 650}},
]


@pytest.mark.parametrize("return_tensors", ["pt", "np"])
@pytest.mark.parametrize("options", CONFIGS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_labels_and_padding_equal_transformers(options, return_tensors):
    images, annotations = _images(), _annotations()
    ours = DFineImageProcessor(**options)(images, annotations=annotations, return_tensors=return_tensors)
    for backend, oracle in _oracles(**options).items():
        theirs = oracle(images, annotations=annotations, return_tensors=return_tensors)
        assert set(ours) == set(theirs), backend
        assert np.allclose(np.asarray(ours["pixel_values"]), np.asarray(theirs["pixel_values"]), atol=1 / 255 + 1e-6)
        if "pixel_mask" in theirs:
            assert type(ours["pixel_mask"]) is type(theirs["pixel_mask"])
            assert ours["pixel_mask"].dtype == theirs["pixel_mask"].dtype
            assert np.array_equal(np.asarray(ours["pixel_mask"]), np.asarray(theirs["pixel_mask"]))
        assert len(ours["labels"]) == len(theirs["labels"]) == 3
        for mine, reference in zip(ours["labels"], theirs["labels"]):
            assert isinstance(mine, BatchFeature)
            assert list(mine) == list(reference), backend  # same keys, same order ("size" only when set)
            for key, value in mine.items():
                expected = reference[key]
                assert type(value) is type(expected) and value.dtype == expected.dtype, (backend, key)
                assert tuple(value.shape) == tuple(expected.shape), (backend, key)
                # The PIL backend rescales padded boxes in float64 (as we do), torchvision in float32: 1 ulp apart.
                tolerance = 0.0 if backend == "pil" or key != "boxes" else 1e-7
                difference = np.abs(np.asarray(value, np.float64) - np.asarray(expected, np.float64))
                assert difference.max(initial=0.0) <= tolerance, (backend, key)


def test_annotation_semantics_spelled_out():
    """What the oracle test checks, written down: crowd/degenerate/outside boxes dropped, clipping, area scaling."""
    image = _images([(50, 60)])
    labels = DFineImageProcessor()(image, annotations=_annotations()[0])["labels"][0]
    assert labels["class_labels"].tolist() == [2, 1, 4]
    assert labels["iscrowd"].tolist() == [0, 0, 0]
    assert labels["image_id"].tolist() == [3] and labels["orig_size"].tolist() == [50, 60]
    assert labels["size"].tolist() == [640, 640]
    # Area is the given one (not clipped), times the two resize ratios.
    expected_area = np.float32([600, 400, 600]) * ((640 / 60) * (640 / 50))
    assert np.array_equal(labels["area"].numpy(), expected_area)
    # [-5, -5, 20, 20] clipped to corners (0, 0, 15, 15): normalised (cx, cy, w, h) of the 60x50 image.
    assert torch.allclose(labels["boxes"][1], torch.tensor([7.5 / 60, 7.5 / 50, 15 / 60, 15 / 50]))
    assert labels["boxes"].dtype == torch.float32 and labels["class_labels"].dtype == torch.int64
    pixels_only = DFineImageProcessor(do_convert_annotations=False)(image, annotations=_annotations()[0])
    assert torch.allclose(pixels_only["labels"][0]["boxes"][1], torch.tensor([0, 0, 15 * 640 / 60, 15 * 640 / 50]))


def test_return_tensors_none_gives_tensors_and_to_moves_labels():
    images, annotations = _images(), _annotations()
    batch = DFineImageProcessor(do_resize=False, do_pad=True)(images, annotations=annotations, return_tensors=None)
    assert isinstance(batch["labels"][0]["boxes"], torch.Tensor) and isinstance(batch.pixel_mask, torch.Tensor)
    moved = batch.to("cpu", torch.float16)
    assert moved.pixel_values.dtype == torch.float16 and moved.pixel_mask.dtype == torch.int64
    assert isinstance(moved["labels"][0], BatchFeature)
    assert moved["labels"][0]["boxes"].dtype == torch.float32  # labels move but keep their precision


def test_padding_pixels_and_mask():
    images = _images([(50, 60), (80, 40)])
    batch = DFineImageProcessor(do_resize=False, do_pad=True)(images)
    assert batch.pixel_values.shape == (2, 3, 80, 60) and batch.pixel_mask.shape == (2, 80, 60)
    for index, image in enumerate(images):
        alone = DFineImageProcessor(do_resize=False)(image).pixel_values[0]
        height, width = alone.shape[1:]
        assert torch.equal(batch.pixel_values[index, :, :height, :width], alone)
        padding = batch.pixel_values[index].clone()
        padding[:, :height, :width] = 0
        assert not padding.any()  # zeros elsewhere
        assert batch.pixel_mask[index].sum() == height * width and batch.pixel_mask[index, :height, :width].all()
    resized = DFineImageProcessor(do_pad=True)(images)  # same size after resizing: nothing to pad
    assert resized.pixel_mask.shape == (2, 640, 640) and bool(resized.pixel_mask.all())
    assert "pixel_mask" not in DFineImageProcessor()(images)
    as_numpy = DFineImageProcessor(do_resize=False, do_pad=True)(images, return_tensors="np")
    assert isinstance(as_numpy["pixel_mask"], np.ndarray) and as_numpy["pixel_mask"].dtype == np.int64


def test_padding_errors_are_one_line():
    images = _images([(50, 60), (80, 40)])
    with pytest.raises(DFineError, match=r"image 1 is 80x40 .*pad_size 64x64") as caught:
        DFineImageProcessor(do_resize=False, do_pad=True, pad_size=64)(images)
    assert "\n" not in str(caught.value)
    with pytest.raises(DFineError, match="do_pad=True"):
        DFineImageProcessor(do_resize=False)(images)


def _with(items: list[dict], index: int, obj_index: int | None = None, **changes) -> list[dict]:
    copy = json.loads(json.dumps(items))
    target = copy[index] if obj_index is None else copy[index]["annotations"][obj_index]
    for key, value in changes.items():
        if value is KeyError:
            del target[key]
        else:
            target[key] = value
    return copy


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda a: a[:2], r"3 image\(s\) but 2 annotation\(s\)"),
        (lambda a: "annotations.json", "must be a dict"),
        (lambda a: _with(a, 2, 0, bbox=KeyError), r"image 2, annotation 0: missing 'bbox'"),
        (lambda a: _with(a, 2, 1, bbox=[1, 2, 3]), r"image 2, annotation 1: 'bbox' must be 4 numbers"),
        (lambda a: _with(a, 0, 3, bbox=[1, 2, "3", 4]), r"image 0, annotation 3: 'bbox' must be 4 numbers"),
        (lambda a: _with(a, 0, 0, bbox="1 2 3 4"), r"image 0, annotation 0: 'bbox' must be 4 numbers"),
        (lambda a: _with(a, 2, 0, area=KeyError), r"image 2, annotation 0: missing 'area'"),
        (lambda a: _with(a, 2, 0, category_id="cat"), r"image 2, annotation 0: 'category_id' must be an integer"),
        (lambda a: _with(a, 1, image_id=KeyError), r"annotations for image 1: missing 'image_id'"),
        (lambda a: _with(a, 1, annotations={"bbox": [1, 2, 3, 4]}), r"image 1: 'annotations' must be a list"),
        (lambda a: a[:2] + [[1, 2]], r"annotations for image 2: expected a dict"),
    ],
)
def test_malformed_annotations_give_one_line_errors(make, message):
    with pytest.raises(DFineError, match=message) as caught:
        DFineImageProcessor()(_images(), annotations=make(_annotations()))
    assert "\n" not in str(caught.value)


def test_annotation_formats():
    with pytest.raises(DFineError, match="coco_panoptic") as caught:
        DFineImageProcessor(format="coco_panoptic")(_images(), annotations=_annotations())
    assert "\n" not in str(caught.value)
    assert "pixel_values" in DFineImageProcessor(format="coco_panoptic")(_images())  # only refused when used
    with pytest.raises(ConfigError, match="format"):
        DFineImageProcessor(format="pascal_voc")
    # transformers' enum is accepted as well as its string value.
    from transformers.image_utils import AnnotationFormat

    assert DFineImageProcessor(format=AnnotationFormat.COCO_DETECTION).format == "coco_detection"


def test_padding_options_round_trip_through_transformers(tmp_path):
    ours = DFineImageProcessor(do_pad=True, pad_size={"height": 700, "width": 650}, do_convert_annotations=False)
    ours.save_pretrained(tmp_path)
    theirs = RTDetrImageProcessor.from_pretrained(tmp_path)
    assert theirs.do_pad is True and (theirs.pad_size.height, theirs.pad_size.width) == (700, 650)
    assert theirs.do_convert_annotations is False
    assert DFineImageProcessor.from_pretrained(tmp_path).to_dict() == ours.to_dict()
    default = DFineImageProcessor()
    assert default.to_dict()["do_pad"] is False and default.to_dict()["pad_size"] is None
    assert "do_pad=True" in repr(ours)
