"""Parity with Hugging Face transformers' DFineForObjectDetection, both directions, every size preset.

transformers builds the model with random weights; every parameter is perturbed (so no zero-initialised head
hides a wiring error) and batch-norm statistics are set from real activations (so outputs depend on the image).
The weights travel through save_pretrained files, the way users move checkpoints.
"""

from __future__ import annotations

import pytest
import torch
from hf_oracle import calibrate_batch_norms, hf_model_from_ours, natural_images, randomize_weights, to_pixel_values
from model.keyfiles import read_keys
from safetensors import safe_open

import dfine

transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def pixel_values() -> torch.Tensor:
    return to_pixel_values(natural_images(2, 640, seed=1))


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.slow
@pytest.mark.parametrize("size", ["n", "s", "m", "l", "x"])
def test_parity_both_directions(size: str, pixel_values: torch.Tensor, tmp_path) -> None:
    config = dfine.DFineConfig.from_preset(f"dfine-{size}-coco")
    hf = hf_model_from_ours(config, tmp_path / "config")
    randomize_weights(hf, seed=3)
    calibrate_batch_norms(hf, pixel_values)
    hf.save_pretrained(tmp_path / "hf")

    ours = dfine.DFineForObjectDetection.from_pretrained(tmp_path / "hf")
    with torch.no_grad():
        expected = hf(pixel_values=pixel_values)
        got = ours(pixel_values)
    assert got.logits.shape == expected.logits.shape == (2, 300, 80)
    # the outputs must depend on the image, or the comparison proves little
    assert _max_diff(expected.logits[0], expected.logits[1]) > 0.5
    assert _max_diff(expected.pred_boxes[0], expected.pred_boxes[1]) > 0.05
    assert _max_diff(got.logits, expected.logits) <= TOLERANCE
    assert _max_diff(got.pred_boxes, expected.pred_boxes) <= TOLERANCE

    # reverse: our files load in transformers with nothing missing or left over, and give the same outputs
    ours.save_pretrained(tmp_path / "ours")
    reloaded, info = transformers.DFineForObjectDetection.from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    with torch.no_grad():
        again = reloaded.eval()(pixel_values=pixel_values)
    assert _max_diff(again.logits, expected.logits) <= TOLERANCE
    assert _max_diff(again.pred_boxes, expected.pred_boxes) <= TOLERANCE

    # and the file uses exactly the hub's key names and shapes
    with safe_open(str(tmp_path / "ours" / "model.safetensors"), "pt") as f:
        written = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    assert written == read_keys("hf", size)
