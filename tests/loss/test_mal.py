"""DEIM's Matchability-Aware Loss against its published definition, on cases computed by hand.

DEIM (Huang et al., CVPR 2025), Eq. 4, with p = σ(logit), q = IoU of the matched prediction, γ = 1.5:

    MAL(p, q, y) = −(q^γ log p + (1 − q^γ) log(1 − p))   if y = 1
                   −p^γ log(1 − p)                         if y = 0

summed over every (query, class) element and divided by the number of target boxes.
"""

from __future__ import annotations

import math

import pytest
import torch

from dfine.config import DFineConfig
from dfine.loss import build_criterion
from dfine.loss.functional import matchability_aware_loss, varifocal_loss


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _case():
    # one image, two queries, two classes; query 0 matches a target of class 1
    logits = torch.tensor([[[0.5, 1.0], [-1.0, 2.0]]], dtype=torch.float64)
    pred = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1]]], dtype=torch.float64)
    target = torch.tensor([[0.5, 0.5, 0.2, 0.4]], dtype=torch.float64)  # same centre, twice as tall: IoU 1/2
    index = torch.tensor([0])
    return logits, pred, index, torch.tensor([0]), torch.tensor([1]), target


def _by_hand(gamma: float, num_boxes: float) -> float:
    q = 0.5
    total = 0.0
    for query, row in enumerate([[0.5, 1.0], [-1.0, 2.0]]):
        for cls, logit in enumerate(row):
            p = _sigmoid(logit)
            if (query, cls) == (0, 1):
                total += -(q**gamma * math.log(p) + (1 - q**gamma) * math.log(1 - p))
            else:
                total += -(p**gamma) * math.log(1 - p)
    return total / num_boxes


@pytest.mark.parametrize(("gamma", "num_boxes"), [(1.5, 1.0), (2.0, 1.0), (1.5, 3.0)])
def test_matches_the_published_definition(gamma: float, num_boxes: float) -> None:
    logits, pred, batch_idx, query_idx, labels, target = _case()
    value = matchability_aware_loss(logits, pred, batch_idx, query_idx, labels, target, num_boxes, gamma)
    assert float(value) == pytest.approx(_by_hand(gamma, num_boxes), rel=1e-12)


def test_a_perfect_match_is_plain_cross_entropy_towards_one() -> None:
    logits = torch.tensor([[[3.0]]], dtype=torch.float64)
    box = torch.tensor([[[0.5, 0.5, 0.2, 0.2]]], dtype=torch.float64)
    value = matchability_aware_loss(logits, box, torch.tensor([0]), torch.tensor([0]), torch.tensor([0]), box[0], 1.0,
                                    1.5)
    assert float(value) == pytest.approx(-math.log(_sigmoid(3.0)), rel=1e-12)


def test_differs_from_vfl_where_deim_says_it_does() -> None:
    """A confident positive with a low IoU: VFL weights its loss by the IoU (1/4 here), MAL by 1, so MAL corrects
    the over-confident score ~4x harder; both lower it, towards IoU (VFL) or IoU^γ (MAL)."""
    logits = torch.tensor([[[2.0]]], dtype=torch.float64, requires_grad=True)
    pred = torch.tensor([[[0.5, 0.5, 0.2, 0.2]]], dtype=torch.float64)
    target = torch.tensor([[0.5, 0.5, 0.2, 0.8]], dtype=torch.float64)  # IoU 1/4
    args = (pred, torch.tensor([0]), torch.tensor([0]), torch.tensor([0]), target, 1.0)
    (mal_grad,) = torch.autograd.grad(matchability_aware_loss(logits, *args, 1.5), logits)
    (vfl_grad,) = torch.autograd.grad(varifocal_loss(logits, *args, 0.75, 2.0), logits)
    p = _sigmoid(2.0)
    assert float(mal_grad) == pytest.approx(p - 0.25**1.5, rel=1e-12)
    assert float(vfl_grad) == pytest.approx(0.25 * (p - 0.25), rel=1e-12)
    assert float(mal_grad) > 3 * float(vfl_grad) > 0


def test_the_deim_config_trains_with_mal_instead_of_vfl() -> None:
    config = DFineConfig.from_preset("dfine-n-coco", num_labels=2)
    assert "loss_vfl" in build_criterion(config).weight_dict
    config.mal_gamma = 1.5
    criterion = build_criterion(config)
    assert "loss_mal" in criterion.weight_dict and "loss_vfl" not in criterion.weight_dict
    assert criterion.mal_gamma == 1.5
    assert DFineConfig.from_dict(config.to_dict()).mal_gamma == 1.5  # kept in config.json
