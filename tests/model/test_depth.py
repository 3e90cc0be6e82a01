"""The decoder-depth knob: K layers at inference give layer K's detections, all layers give today's outputs."""

from __future__ import annotations

import copy

import pytest
import torch
from hf_oracle import randomize_weights

import dfine
from dfine.errors import ConfigError
from dfine.model.depth import decoder_layers_run, set_decoder_layers

SIZE = 128


@pytest.fixture(scope="module")
def nano_and_pixels():
    torch.manual_seed(0)
    # few queries, so that a small input has enough encoder positions to choose them from: a fast test
    config = dfine.DFineConfig.from_preset("dfine-n-coco", num_queries=30)
    model = dfine.DFineForObjectDetection(config).eval()
    return model, torch.rand(1, 3, SIZE, SIZE)


def test_full_depth_is_bit_identical(nano_and_pixels) -> None:
    model, pixels = nano_and_pixels
    layers = model.config.decoder_layers
    with torch.inference_mode():
        before = model(pixels)
        deployed_before = model.deploy(SIZE)(pixels)
        model.set_decoder_layers(layers)
        try:
            after = model(pixels)
        finally:
            model.set_decoder_layers(None)
        deployed_after = model.deploy(SIZE, decoder_layers=layers)(pixels)
    assert torch.equal(before.logits, after.logits) and torch.equal(before.pred_boxes, after.pred_boxes)
    assert torch.equal(deployed_before.logits, deployed_after.logits)
    assert torch.equal(deployed_before.pred_boxes, deployed_after.pred_boxes)


def test_truncated_output_is_that_layers_training_output(nano_and_pixels) -> None:
    """Eval with K layers returns exactly what layer K gives in the full model's training-mode forward, where every
    layer's logits and boxes are kept (index 0 is the pre head, so layer K is index K)."""
    model, pixels = nano_and_pixels
    full = copy.deepcopy(model)
    full.model.decoder.train()  # every decoder layer's outputs; the backbone's batch norms stay in eval mode
    truncated_model = copy.deepcopy(model)
    with torch.inference_mode():
        all_layers = full(pixels)
        assert all_layers.intermediate_logits.shape[1] == model.config.decoder_layers + 1
        for layers in (1, 2):  # layer 1 also makes the pre box; later layers refine around it
            truncated = truncated_model.set_decoder_layers(layers)(pixels)
            assert truncated.logits.shape == all_layers.intermediate_logits[:, layers].shape
            torch.testing.assert_close(truncated.logits, all_layers.intermediate_logits[:, layers], rtol=0,
                                       atol=1e-6)
            torch.testing.assert_close(truncated.pred_boxes, all_layers.intermediate_reference_points[:, layers],
                                       rtol=0, atol=1e-6)
            # the last layer's outputs differ from layer K's (its own class head): the knob did something
            assert not torch.allclose(truncated.logits, all_layers.intermediate_logits[:, -1], atol=1e-4)
        # the deploy form (merged projections, folded convolutions) computes the same with K layers only; in
        # float64, where the random network's amplification of rounding stays far below the tolerance
        model64 = copy.deepcopy(model).double()
        deployed64 = model64.deploy(SIZE, decoder_layers=2)
        deployed = deployed64(pixels.double())
        truncated64 = model64.set_decoder_layers(2)(pixels.double())
    assert len(deployed64.head.layers) == 2
    torch.testing.assert_close(deployed.logits, truncated64.logits, rtol=0, atol=1e-7)
    torch.testing.assert_close(deployed.pred_boxes, truncated64.pred_boxes, rtol=0, atol=1e-8)


def test_knob_checks_and_restores(nano_and_pixels) -> None:
    model, _ = nano_and_pixels
    copied = copy.deepcopy(model)
    assert decoder_layers_run(copied) == copied.config.decoder_layers
    for bad in (0, copied.config.decoder_layers + 1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="decoder layers must be an integer from 1 to"):
            set_decoder_layers(copied, bad)
    set_decoder_layers(copied, 2)
    assert decoder_layers_run(copied) == 2 and copied.config.eval_idx == -1  # the configuration is untouched
    set_decoder_layers(copied, None)
    assert decoder_layers_run(copied) == copied.config.decoder_layers
    fast = model.optimize_for_inference(image_size=SIZE, decoder_layers=3)
    assert len(fast.deployed.head.layers) == 3
    with pytest.raises(ConfigError, match="deployed with 3 decoder layers"):
        dfine.model.deploy.fast.optimize_for_inference(fast, decoder_layers=2)


def test_box_uncertainty_with_k_layers_is_layer_ks_in_both_forms(nano_and_pixels) -> None:
    """The edge spreads follow the knob: with K layers both the training form and the deploy form (which copies the
    depth) read layer K's corner distributions, and agree; in float64, as above."""
    model, pixels = nano_and_pixels
    model64 = copy.deepcopy(model)
    randomize_weights(model64, seed=5)  # the initial box heads give every query the same spread
    model64.double()
    pixels64 = pixels.double()
    with torch.inference_mode():
        full = model64(pixels64, output_uncertainty=True).edge_uncertainty
        set_decoder_layers(model64, 1)
        reference = model64(pixels64, output_uncertainty=True)
        deployed = model64.deploy(SIZE).set_uncertainty()(pixels64)
    assert len(model64.deploy(SIZE).head.layers) == 1
    torch.testing.assert_close(deployed.pred_boxes, reference.pred_boxes, rtol=0, atol=1e-8)
    torch.testing.assert_close(deployed.edge_uncertainty, reference.edge_uncertainty, rtol=0, atol=1e-8)
    assert not torch.allclose(reference.edge_uncertainty, full, atol=1e-4)  # layer 1's spreads, not the last's
