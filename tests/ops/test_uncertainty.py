"""Box uncertainty from the FDR edge distributions: the spread of the edge position the model's own distribution
describes, checked against distance2bbox evaluated bin by bin."""

from __future__ import annotations

import torch

from dfine.ops.boxes import box_cxcywh_to_xyxy
from dfine.ops.fdr import distance2bbox, weighting_function
from dfine.ops.uncertainty import box_uncertainty, edge_spread, edge_uncertainty

NUM_BINS = 32
REG_SCALE = 4.0
PROJECT = weighting_function(NUM_BINS, torch.tensor([0.5]), REG_SCALE).double()


def _peaked(bin_index: int, sharpness: float = 50.0) -> torch.Tensor:
    """Logits of one edge with (almost) all mass on one bin."""
    logits = torch.zeros(NUM_BINS + 1, dtype=torch.float64)
    logits[bin_index] = sharpness
    return logits


def test_sigma_is_the_spread_of_the_edge_positions_distance2bbox_gives_bin_by_bin() -> None:
    """The σ of each edge equals the standard deviation of that edge's coordinate over the bins, each weighted by
    its probability, where a bin's coordinate is what distance2bbox makes of W(n): the definition, not the formula."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4 * (NUM_BINS + 1), generator=generator, dtype=torch.float64) * 2
    reference = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.3, 0.6, 0.5, 0.1], [0.7, 0.2, 0.05, 0.05]],
                             dtype=torch.float64)
    sigma = edge_uncertainty(logits, reference, PROJECT, REG_SCALE)

    probs = logits.view(3, 4, NUM_BINS + 1).softmax(-1)
    # every edge placed at every bin: (3, N+1, 4) corner coordinates of the boxes distance2bbox decodes
    distances = PROJECT[None, :, None].expand(3, -1, 4)
    corners = box_cxcywh_to_xyxy(distance2bbox(reference[:, None].expand(-1, NUM_BINS + 1, -1), distances, REG_SCALE))
    weights = probs.transpose(1, 2)  # (3, N+1, 4)
    mean = (weights * corners).sum(1, keepdim=True)
    expected = (weights * (corners - mean) ** 2).sum(1).sqrt()
    torch.testing.assert_close(sigma, expected, rtol=1e-10, atol=1e-12)
    # and the mean position is the box the model outputs
    boxes = box_cxcywh_to_xyxy(distance2bbox(reference, (probs * PROJECT).sum(-1), REG_SCALE))
    torch.testing.assert_close(boxes, mean.squeeze(1), rtol=1e-10, atol=1e-12)


def test_a_sharp_edge_has_no_spread_and_a_split_one_a_large_spread() -> None:
    sharp = _peaked(NUM_BINS // 2)
    split = torch.full((NUM_BINS + 1,), -50.0, dtype=torch.float64)
    split[NUM_BINS // 2 - 8] = split[NUM_BINS // 2 + 8] = 0.0  # half the mass on either side of the centre
    spreads = edge_spread(torch.cat([sharp, sharp, split, sharp])[None], PROJECT)[0]
    assert spreads[:2].max() < 1e-6 and spreads[3] < 1e-6
    # two equal point masses at ±W: σ is their half distance
    assert abs(spreads[2].item() - PROJECT[NUM_BINS // 2 + 8].item()) < 1e-9


def test_sigma_scales_with_the_reference_box_side_of_its_axis_only() -> None:
    logits = torch.randn(1, 4 * (NUM_BINS + 1), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    narrow = edge_uncertainty(logits, torch.tensor([[0.5, 0.5, 0.1, 0.3]], dtype=torch.float64), PROJECT, REG_SCALE)
    wide = edge_uncertainty(logits, torch.tensor([[0.5, 0.5, 0.2, 0.3]], dtype=torch.float64), PROJECT, REG_SCALE)
    torch.testing.assert_close(wide[0, 0::2], 2 * narrow[0, 0::2])
    torch.testing.assert_close(wide[0, 1::2], narrow[0, 1::2])


def test_an_ambiguous_box_scores_higher_than_a_sharp_one_of_the_same_size() -> None:
    sharp = torch.cat([_peaked(NUM_BINS // 2)] * 4)
    blurred = torch.cat([torch.linspace(0, 1, NUM_BINS + 1, dtype=torch.float64).neg().add(1) * 2] * 4)
    reference = torch.tensor([[0.5, 0.5, 0.3, 0.3]] * 2, dtype=torch.float64)
    edges = edge_uncertainty(torch.stack([sharp, blurred]), reference, PROJECT, REG_SCALE)
    scores = box_uncertainty(edges, box_cxcywh_to_xyxy(reference))
    assert scores.shape == (2,) and (scores >= 0).all()
    assert scores[1] > 100 * scores[0] and scores[1] > 0.01


def test_box_uncertainty_is_scale_free_and_the_same_in_pixels() -> None:
    """σ relative to the box side: the same number for a box in normalised units and in pixels, whatever the image
    size (x edges scale with the width, y edges with the height)."""
    edges = torch.tensor([[0.01, 0.02, 0.03, 0.04]], dtype=torch.float64)
    boxes = torch.tensor([[0.1, 0.2, 0.5, 0.6]], dtype=torch.float64)
    scale = torch.tensor([640.0, 480.0, 640.0, 480.0], dtype=torch.float64)
    normalised = box_uncertainty(edges, boxes)
    torch.testing.assert_close(box_uncertainty(edges * scale, boxes * scale), normalised)
    torch.testing.assert_close(normalised, torch.tensor([(0.01 / 0.4 + 0.02 / 0.4 + 0.03 / 0.4 + 0.04 / 0.4) / 4],
                                                        dtype=torch.float64))


def test_half_precision_logits_give_float32_spreads() -> None:
    logits = torch.randn(2, 5, 4 * (NUM_BINS + 1), generator=torch.Generator().manual_seed(2))
    spread = edge_spread(logits.half(), PROJECT.half())
    assert spread.dtype == torch.float32 and spread.shape == (2, 5, 4) and (spread >= 0).all()
    torch.testing.assert_close(spread, edge_spread(logits, PROJECT.float()), atol=2e-2, rtol=2e-2)
