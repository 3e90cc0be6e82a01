"""``Predictor.predict`` takes one image or many, in every form the image processor reads (path, PIL image, numpy
array, torch tensor), with boxes in each image's own pixels; ``Predictor.from_pretrained`` and ``predict`` refuse
arguments of the wrong type with one line naming the argument, before loading anything."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hf_oracle import natural_images
from PIL import Image

import dfine
from dfine.errors import ConfigError, DFineError
from dfine.predict.predictor import Predictor

# not square, so that a height/width mix-up moves the boxes
HEIGHT, WIDTH = 96, 136


@pytest.fixture(scope="module")
def predictor(model_dir: Path) -> Predictor:
    return Predictor.from_pretrained(model_dir, device="cpu", image_size=160)


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    return natural_images(1, 160, seed=3)[0].resize((WIDTH, HEIGHT))


@pytest.fixture(scope="module")
def reference(predictor: Predictor, picture: Image.Image) -> dict[str, torch.Tensor]:
    [result] = predictor.predict([picture], threshold=0.0)
    assert len(result["boxes"]) > 0
    return result


def _same(result: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert torch.equal(result["labels"], expected["labels"])
    torch.testing.assert_close(result["scores"], expected["scores"])
    torch.testing.assert_close(result["boxes"], expected["boxes"])


def test_boxes_are_in_the_pixels_of_the_image(reference: dict[str, torch.Tensor]) -> None:
    boxes = reference["boxes"]
    # a random model's boxes spread over the image: some reach past its middle in x, which a box scaled to
    # (width=height) would not
    assert boxes[:, 2].max() > HEIGHT and boxes[:, 0::2].max() <= WIDTH * 1.5


@pytest.mark.parametrize("as_path", [str, Path])
def test_one_path_is_one_image(predictor: Predictor, picture: Image.Image, reference: dict[str, torch.Tensor],
                               tmp_path: Path, as_path: type) -> None:
    file = tmp_path / "one.png"  # lossless: the same pixels as the picture
    picture.save(file)
    results = predictor.predict(as_path(file), threshold=0.0)
    assert isinstance(results, list) and len(results) == 1  # a list of one, as OnnxDetector.predict gives
    _same(results[0], reference)


def test_one_pil_image_is_one_image(predictor: Predictor, picture: Image.Image,
                                    reference: dict[str, torch.Tensor]) -> None:
    results = predictor.predict(picture, threshold=0.0)
    assert len(results) == 1
    _same(results[0], reference)


@pytest.mark.parametrize("form", ["array_hwc", "array_chw", "tensor_chw", "list_of_array", "tuple_of_tensor"])
def test_arrays_and_tensors_are_images_of_their_own_size(predictor: Predictor, picture: Image.Image,
                                                         reference: dict[str, torch.Tensor], form: str) -> None:
    array = np.asarray(picture)  # (H, W, 3) uint8: the same pixels through the processor's uint8 path
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)  # (3, H, W)
    images = {"array_hwc": array, "array_chw": np.ascontiguousarray(array.transpose(2, 0, 1)), "tensor_chw": tensor,
              "list_of_array": [array], "tuple_of_tensor": (tensor,)}[form]
    results = predictor.predict(images, threshold=0.0)
    assert len(results) == 1
    _same(results[0], reference)


def test_float_tensor_and_batches(predictor: Predictor, picture: Image.Image,
                                  reference: dict[str, torch.Tensor]) -> None:
    tensor = torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1)
    # floats in [0, 1] are resized in float rather than uint8: nearly the same detections, at the same scale
    [floats] = predictor.predict(tensor.float() / 255, threshold=0.0)
    assert floats["boxes"].shape == reference["boxes"].shape
    torch.testing.assert_close(floats["boxes"].max(0).values, reference["boxes"].max(0).values, atol=2.0, rtol=0)
    # batches are compared with PIL batches of the same shape: a batch of 2 need not match 1 to the last bit
    flipped = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    batch = predictor.predict(torch.stack([tensor, tensor.flip(-1)]), threshold=0.0)  # (B, C, H, W)
    for result, expected in zip(batch, predictor.predict([picture, flipped], threshold=0.0), strict=True):
        _same(result, expected)
    mixed = predictor.predict([picture, np.asarray(picture), tensor], threshold=0.0)
    for result, expected in zip(mixed, predictor.predict([picture] * 3, threshold=0.0), strict=True):
        _same(result, expected)


@pytest.mark.parametrize(("images", "message"), [
    (5, "cannot read images from 5: pass an image (a path, PIL image, numpy array or torch tensor) or a list of "
        "them"),
    ([], "no images given"),
    ([5], "cannot read an image of type int"),
])  # fmt: skip
def test_unreadable_inputs_are_one_line(predictor: Predictor, images: object, message: str) -> None:
    with pytest.raises(DFineError, match=re.escape(message)) as info:
        predictor.predict(images)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("threshold", ["0.5", -0.1, 1.5, None, True])
def test_threshold_must_be_a_fraction(predictor: Predictor, picture: Image.Image, threshold: object) -> None:
    message = f"threshold must be a number from 0 to 1, got {threshold!r}"
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        predictor.predict(picture, threshold=threshold)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"model": 123}, "model must be a preset name, hub id, folder or file (a str or Path), got 123"),
    ({"model": None}, "model must be a preset name, hub id, folder or file (a str or Path), got None"),
    ({"image_size": "320"}, "image_size must be a positive multiple of 32, got '320'"),
    ({"image_size": 320.0}, "image_size must be a positive multiple of 32, got 320.0"),
    ({"image_size": 100}, "image_size must be a positive multiple of 32, got 100"),
    ({"device": 0}, "device must be 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device, got 0"),
    ({"half": 1}, "half must be True or False, got 1"),
    ({"compile": "no"}, "compile must be True or False, got 'no'"),
])  # fmt: skip
def test_from_pretrained_argument_types(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    # the model folder does not exist: the argument is reported, not the folder
    arguments = {"model": tmp_path / "no-model", **kwargs}
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        Predictor.from_pretrained(**arguments)


def test_from_pretrained_points_a_model_object_to_the_constructor() -> None:
    model = dfine.DFineForObjectDetection(dfine.DFineConfig.from_preset("dfine-n-coco"))
    with pytest.raises(ConfigError, match=r"got a DFineForObjectDetection: wrap a model already in memory with "
                                          r"Predictor\(model.eval\(\)\) instead$") as info:
        Predictor.from_pretrained(model)
    assert "\n" not in str(info.value)


class _BoxAroundPicture(torch.nn.Module):
    """A stand-in model that finds the picture in its input (the non-zero pixels) and reports one box around it,
    as fractions of the whole input, as a detector does."""

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        boxes = []
        for image in pixel_values:
            filled = image.abs().sum(0) > 0
            rows, columns = filled.any(1).nonzero(), filled.any(0).nonzero()
            x1, x2, y1, y2 = columns.min(), columns.max() + 1, rows.min(), rows.max() + 1
            height, width = filled.shape
            boxes.append(torch.stack([(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width,
                                      (y2 - y1) / height]).float())
        logits = torch.tensor([[[10.0, -10.0]]]).expand(len(boxes), 1, 2)
        return type("Outputs", (), {"logits": logits, "pred_boxes": torch.stack(boxes)[:, None]})()


@pytest.mark.parametrize("options", [{}, {"do_pad": True, "pad_size": (96, 128)},
                                     {"do_resize": False, "do_pad": True}])
def test_boxes_are_in_the_picture_pixels_with_a_padding_processor(options) -> None:
    # with do_pad the picture fills only the top-left part of the input: its boxes used to come out shrunk
    predictor = Predictor(_BoxAroundPicture(), dfine.DFineImageProcessor(size=(64, 64), **options))
    pictures = [Image.new("RGB", (100, 80), (200, 100, 50)), Image.new("RGB", (50, 40), (1, 2, 3))]
    results = predictor.predict(pictures)
    assert [r["boxes"].tolist() for r in results] == [[[0.0, 0.0, 100.0, 80.0]], [[0.0, 0.0, 50.0, 40.0]]]
