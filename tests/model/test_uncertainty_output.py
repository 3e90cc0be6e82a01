"""``output_uncertainty=True`` adds each edge's spread to the outputs without changing the detections, and the
deploy form (what exported graphs are made from) computes the same spreads."""

from __future__ import annotations

import copy

import pytest
import torch
from hf_oracle import natural_images, randomize_weights, to_pixel_values

import dfine
from dfine.model.deploy.deployed import deploy
from dfine.model.deploy.head import DetectionOutput, DetectionWithUncertainty

SIZE = 256  # D-FINE-N: 16² + 8² = 320 encoder tokens, enough for the 300 queries


@pytest.fixture(scope="module")
def nano() -> tuple[dfine.DFineForObjectDetection, torch.Tensor]:
    """A perturbed D-FINE-N and two pictures (module-scoped: tests copy the model before changing it)."""
    model = dfine.DFineForObjectDetection(dfine.DFineConfig.from_preset("dfine-n-coco", num_labels=3)).eval()
    randomize_weights(model, seed=5)
    return model, to_pixel_values(natural_images(2, SIZE, seed=6), SIZE)


def test_uncertainty_leaves_the_detections_bit_identical_and_the_default_fields_unchanged(nano) -> None:
    model, pixels = nano
    with torch.no_grad():
        plain = model(pixels)
        with_sigma = model(pixels, output_uncertainty=True)
    assert torch.equal(plain.logits, with_sigma.logits) and torch.equal(plain.pred_boxes, with_sigma.pred_boxes)
    assert "edge_uncertainty" not in plain and plain.edge_uncertainty is None
    assert with_sigma.keys() == [*plain.keys(), "edge_uncertainty"]  # appended last: the tuple order is kept
    sigma = with_sigma.edge_uncertainty
    assert sigma.shape == (2, 300, 4) and (sigma >= 0).all() and torch.isfinite(sigma).all()
    assert sigma.std() > 0  # depends on the query, not a constant


def test_training_mode_spreads_line_up_with_the_boxes_denoising_queries_included(nano) -> None:
    model, pixels = copy.deepcopy(nano[0]).train(), nano[1][:1]
    labels = [{"class_labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3],
                                                                             [0.3, 0.3, 0.1, 0.1]])}]
    out = model(pixels, labels=labels, output_uncertainty=True)
    assert out.edge_uncertainty.shape == (*out.pred_boxes.shape[:2], 4)


def test_the_deploy_form_computes_the_same_spreads(nano) -> None:
    """In float64, where the deploy form's folding is exact, so the query order cannot differ either."""
    model, pixels = copy.deepcopy(nano[0]).double(), nano[1][:1]
    deployed = deploy(model, SIZE)
    with torch.inference_mode():
        assert type(deployed(pixels.double())) is DetectionOutput  # off by default: exports are unchanged
        reference = model(pixels.double(), output_uncertainty=True)
        output = deployed.set_uncertainty()(pixels.double())
    assert type(output) is DetectionWithUncertainty
    assert (output.pred_boxes - reference.pred_boxes).abs().max() < 1e-8
    assert (output.edge_uncertainty - reference.edge_uncertainty).abs().max() < 1e-8
