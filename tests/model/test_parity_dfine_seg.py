"""Parity with D-FINE-seg 0.6.2's own instance segmentation model (the oracle, see tests/dfine_seg_oracle.py), every
size, through the real loading path: the oracle's state dict is saved as D-FINE-seg saves its ``.pt`` files and read
by ``DFineForInstanceSegmentation.from_pretrained``, which infers the size from the tensors.

Every parameter is perturbed (no zero-initialised head hides a wiring error) and batch-norm statistics come from real
activations. The comparison runs in float64: in float32 the two implementations' rounding differs at the 1e-6
level, which can swap near-tied scores in the top-k query selection and permute the queries. D-FINE-seg builds its
encoder's position embedding in float32 even then, so differences of ~1e-7 remain: the test checks that no two
selected encoder scores are that close (a property of the fixed random weights, not of either implementation).
"""

from __future__ import annotations

import pytest
import torch
from dfine_seg_oracle import oracle_model
from hf_oracle import calibrate_batch_norms, natural_images, randomize_weights, to_pixel_values

import dfine

TOLERANCE = 1e-4

# Input (height, width): about the smallest that give the 300 queries enough encoder tokens, to keep float64 on a
# CPU affordable (N has no stride-8 level: 256×320 gives 16·20 + 8·10 = 400 tokens, and is not square, where a
# transposed position grid or anchor would show; the others at 128²: 16² + 8² + 4² = 336).
INPUT_SIZES = {"n": (256, 320), "s": (128, 128), "m": (128, 128), "l": (128, 128), "x": (128, 128)}


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# Gap between consecutive selected encoder scores above which D-FINE-seg's float32 position embedding cannot reorder
# the queries: its effect on the scores measured up to 5e-7.
SELECTION_MARGIN = 5e-6

# The test pictures' seed per size, chosen so that the selection has that margin with one thread (checked in the
# test).
IMAGE_SEEDS = {"n": 4, "s": 1, "m": 1, "l": 0, "x": 1}

# Images per batch: two for N, where the batch axis of every step (the mask product included) is checked; one for
# the larger sizes, whose float64 convolutions set the test's time.
BATCH_SIZES = {"n": 2, "s": 1, "m": 1, "l": 1, "x": 1}


def _selection_margin(enc_outputs_class: torch.Tensor, num_queries: int) -> float:
    """The smallest gap between the encoder scores that rank the first num_queries + 1 tokens, over the batch."""
    scores = enc_outputs_class.max(dim=-1).values.topk(num_queries + 1, dim=1).values
    return (scores[:, :-1] - scores[:, 1:]).min().item()


def _oracle_checkpoint(size: str, pixel_values: torch.Tensor, path, num_queries: int | None = None) -> torch.nn.Module:
    torch.manual_seed(0)  # D-FINE-seg's own initialisation, under the perturbation
    oracle = oracle_model(size, num_queries=num_queries)
    randomize_weights(oracle, seed=5)
    calibrate_batch_norms(oracle, pixel_values)
    torch.save(oracle.state_dict(), path)
    return oracle


@pytest.mark.slow
@pytest.mark.parametrize("size", ["n", "s", "m", "l", "x"])
def test_logits_boxes_and_masks_match_dfine_seg(size: str, tmp_path) -> None:
    # One intra-op thread whatever earlier tests left: the float32 batch-norm calibration rounds differently with
    # the thread count (the whole suite failed the near-tie check for L and X where the file alone passed), and the
    # check is about the resulting weights, so they must not vary.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _check_parity(size, tmp_path)
    finally:
        torch.set_num_threads(threads)


def _check_parity(size: str, tmp_path) -> None:
    (height, width), batch = INPUT_SIZES[size], BATCH_SIZES[size]
    side = max(height, width)
    images = natural_images(batch, side, seed=IMAGE_SEEDS[size])
    pixel_values = to_pixel_values(images, side)[:, :, :height, :width].contiguous()
    oracle = _oracle_checkpoint(size, pixel_values, tmp_path / f"dfine_seg_{size}_coco.pt")
    ours = dfine.DFineForInstanceSegmentation.from_pretrained(tmp_path / f"dfine_seg_{size}_coco.pt")
    assert ours.config.use_mask_head and ours.config.mask_dim == (128 if size == "n" else 256)
    assert (ours.config.mask_low_level_stage is not None) == (size == "n")

    oracle.double()
    ours.double()
    with torch.no_grad():
        expected = oracle(pixel_values.double())
        got = ours(pixel_values.double())
    margin = _selection_margin(got.enc_outputs_class, 300)
    assert margin > SELECTION_MARGIN, f"near-tied encoder scores ({margin:.1e} apart): pick another IMAGE_SEEDS entry"
    assert got.pred_masks.shape == expected["pred_masks"].shape == (batch, 300, height // 4, width // 4)
    # the outputs must vary over queries and pixels (and images), or the comparison proves little
    assert expected["pred_boxes"].std(dim=1).mean() > 0.01
    assert expected["pred_masks"].std(dim=(-2, -1)).mean() > 0.01
    if batch > 1:
        assert _max_diff(expected["pred_logits"][0], expected["pred_logits"][1]) > 0.5
        assert _max_diff(expected["pred_masks"][0], expected["pred_masks"][1]) > 0.1
    assert _max_diff(got.logits, expected["pred_logits"]) <= TOLERANCE
    assert _max_diff(got.pred_boxes, expected["pred_boxes"]) <= TOLERANCE
    # D-FINE-seg's eval output holds probabilities, ours logits
    assert _max_diff(got.pred_masks.sigmoid(), expected["pred_masks"]) <= TOLERANCE


def test_wrapped_checkpoints_detector_and_folder_round_trip(tmp_path, caplog) -> None:
    """D-FINE-seg's {"model", "meta"} and {"ema": {"module"}} files load like bare ones; a segmentation checkpoint
    loads as a detector (mask branch not used, said); our folder loads back with the same outputs."""
    pixel_values = to_pixel_values(natural_images(1, 160, seed=4), 160)
    bare = tmp_path / "bare.pt"
    state = _oracle_checkpoint("n", pixel_values, bare, num_queries=50).state_dict()
    torch.save({"model": state, "meta": {"dfine_seg_version": "0.6.2", "task": "segment", "num_classes": 80}},
               tmp_path / "meta.pt")
    torch.save({"ema": {"module": state}}, tmp_path / "ema.pt")

    reference = dfine.DFineForInstanceSegmentation.from_pretrained(bare, num_queries=50)
    for name in ("meta.pt", "ema.pt"):
        loaded = dfine.DFineForInstanceSegmentation.from_pretrained(tmp_path / name, num_queries=50)
        assert all(torch.equal(v, reference.state_dict()[k]) for k, v in loaded.state_dict().items()), name
    with torch.no_grad():
        expected = reference(pixel_values)

    detector = dfine.DFineForObjectDetection.from_pretrained(bare, num_queries=50)
    assert "segmentation checkpoint loaded as DFineForObjectDetection; its mask branch (21 tensors) is not used" \
        in caplog.text
    assert not detector.config.use_mask_head and not any("mask" in k for k in detector.state_dict())
    with torch.no_grad():
        boxes_only = detector(pixel_values)
    assert "pred_masks" not in boxes_only
    assert torch.equal(boxes_only.logits, expected.logits) and torch.equal(boxes_only.pred_boxes, expected.pred_boxes)

    reference.save_pretrained(tmp_path / "folder")
    again = dfine.DFineForInstanceSegmentation.from_pretrained(tmp_path / "folder")
    with torch.no_grad():
        assert torch.equal(again(pixel_values).pred_masks, expected.pred_masks)


def test_a_dfine_seg_detection_checkpoint_starts_a_segmentation_model(tmp_path, caplog) -> None:
    """D-FINE-seg's detection files (dfine_*_coco.pt) have no mask branch: it starts fresh, said in the log."""
    detector = oracle_model("n")
    detector_state = {k: v for k, v in detector.state_dict().items() if ".mask_" not in k}
    torch.save(detector_state, tmp_path / "dfine_n_coco.pt")
    model = dfine.DFineForInstanceSegmentation.from_pretrained(tmp_path / "dfine_n_coco.pt")
    assert "a detection checkpoint; the mask branch of DFineForInstanceSegmentation (21 tensors) starts freshly" \
        in caplog.text
    backbone_key = "model.backbone.model.embedder.stem1.convolution.weight"
    assert torch.equal(model.state_dict()[backbone_key], detector_state["backbone.stem.stem1.conv.weight"])
