"""Predictor with a segmentation model (D-FINE-seg): masks at each picture's size, the processor's instances, and
the options that give boxes only refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hf_oracle import natural_images
from seghelpers import save_tiny_segmentation_model

from dfine.errors import ConfigError
from dfine.predict.predictor import Predictor
from dfine.predict.tiling import TiledDetector


@pytest.fixture(scope="module")
def seg_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_segmentation_model(tmp_path_factory.mktemp("seg"), image_size=160)


def test_a_segmentation_model_gives_the_processors_instances_with_masks(seg_dir) -> None:
    predictor = Predictor.from_pretrained(seg_dir, device="cpu")
    assert predictor.predicts_masks and type(predictor.model).__name__ == "DFineForInstanceSegmentation"
    pictures = [picture.resize(size) for picture, size in zip(natural_images(2, 160, seed=3), [(200, 120), (90, 150)])]
    results = predictor.predict(pictures, threshold=0.0)
    processor = predictor.processor
    with torch.no_grad():
        outputs = predictor.model(processor(pictures)["pixel_values"])
    expected = processor.post_process_instance_segmentation(outputs, threshold=0.0,
                                                            target_sizes=[(120, 200), (150, 90)])
    for result, reference, picture in zip(results, expected, pictures, strict=True):
        assert set(result) == {"scores", "labels", "boxes", "masks", "edge_uncertainty", "uncertainty"}
        assert result["masks"].shape == (len(result["scores"]), picture.height, picture.width)
        assert result["masks"].dtype == torch.bool and result["masks"].any()
        assert torch.equal(result["masks"], reference["masks"])
        torch.testing.assert_close(result["boxes"], reference["boxes"])
        # each mask lies inside its own box
        for mask, (x1, y1, x2, y2) in zip(result["masks"], result["boxes"].tolist()):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            if len(xs):
                assert xs.min() >= x1 - 1 and xs.max() <= x2 and ys.min() >= y1 - 1 and ys.max() <= y2


def test_a_padding_processor_gives_masks_of_the_picture_s_size(seg_dir) -> None:
    predictor = Predictor.from_pretrained(seg_dir, device="cpu")
    predictor.processor.do_pad = True
    predictor.processor.pad_size = {"height": 192, "width": 192}
    [result] = predictor.predict(natural_images(1, 160, seed=3)[0].resize((100, 60)), threshold=0.0)
    assert result["masks"].shape[1:] == (60, 100) and len(result["masks"]) == len(result["scores"])


def test_bf16_runs_the_fast_form_with_its_masks(seg_dir) -> None:
    """--bf16 predicts with the fast form's masks, post-processed as the processor does, with the fields of float32
    (how close bf16's masks are to float32's: tests/model/test_segmentation.py, on the raw outputs, where a box moved
    by rounding does not move the crop of a small mask by a pixel)."""
    pictures = natural_images(2, 160, seed=3)
    [reference, _] = Predictor.from_pretrained(seg_dir, device="cpu").predict(pictures, threshold=0.0)
    fast = Predictor.from_pretrained(seg_dir, device="cpu", bf16=True)
    assert fast.predicts_masks and "bfloat16" in fast.model.mode
    results = fast.predict(pictures, threshold=0.0)
    processor = fast.processor
    with torch.no_grad():
        outputs = fast.model(processor(pictures)["pixel_values"])
    expected = processor.post_process_instance_segmentation(outputs, threshold=0.0, target_sizes=[(160, 160)] * 2)
    for result, instances in zip(results, expected, strict=True):
        assert set(result) == set(reference) and result["masks"].any()
        assert torch.equal(result["masks"], instances["masks"])
        torch.testing.assert_close(result["boxes"], instances["boxes"])


def test_tiling_is_refused_for_a_segmentation_model(seg_dir) -> None:
    predictor = Predictor.from_pretrained(seg_dir, device="cpu")
    with pytest.raises(ConfigError, match="not instance masks"):
        TiledDetector(predictor, 640)
