"""Box formats and tensor overlaps: hand-computed values, the element-wise forms against the pairwise ones."""

from __future__ import annotations

import pytest
import torch

from dfine.ops import (
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    elementwise_box_iou,
    elementwise_generalized_box_iou,
    generalized_box_iou,
)


def _random_xyxy(n: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    centre_size = torch.rand(n, 4, generator=generator, dtype=dtype)
    return box_cxcywh_to_xyxy(centre_size)


def test_formats_by_hand_and_round_trip() -> None:
    box = torch.tensor([[0.5, 0.4, 0.2, 0.6]])
    assert torch.allclose(box_cxcywh_to_xyxy(box), torch.tensor([[0.4, 0.1, 0.6, 0.7]]))
    assert torch.allclose(box_xyxy_to_cxcywh(box_cxcywh_to_xyxy(box)), box)
    batched = torch.rand(2, 3, 4)
    assert box_cxcywh_to_xyxy(batched).shape == (2, 3, 4)


def test_overlaps_by_hand() -> None:
    # two unit squares side by side, sharing half their width: intersection 0.5, union 1.5, hull 1.5
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[0.5, 0.0, 1.5, 1.0]])
    assert box_iou(a, b).item() == pytest.approx(1 / 3)
    assert generalized_box_iou(a, b).item() == pytest.approx(1 / 3)
    # disjoint: IoU 0, hull 3 x 1 holding 2 of area -> GIoU = 0 - (3 - 2) / 3
    c = torch.tensor([[2.0, 0.0, 3.0, 1.0]])
    assert elementwise_box_iou(a, c).item() == 0.0
    assert elementwise_generalized_box_iou(a, c).item() == pytest.approx(-1 / 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_elementwise_is_the_pairwise_diagonal_to_the_bit(dtype) -> None:
    """The loss uses the element-wise forms, the matcher the pairwise ones: a matched pair must score the same."""
    generator = torch.Generator().manual_seed(0)
    a, b = _random_xyxy(50, generator, dtype), _random_xyxy(50, generator, dtype)
    a[:5, 2] = a[:5, 0]  # zero-width boxes, as the loss makes of predictions with a negative width
    assert torch.equal(elementwise_box_iou(a, b), box_iou(a, b).diagonal())
    assert torch.equal(elementwise_generalized_box_iou(a, b), generalized_box_iou(a, b).diagonal())
    assert elementwise_generalized_box_iou(a, b).dtype == dtype


def test_degenerate_boxes_give_values_not_errors() -> None:
    """The original asserts x2 >= x1; a training step must not stop on one diverged prediction."""
    inverted = torch.tensor([[0.6, 0.6, 0.4, 0.4]])
    valid = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    assert torch.isfinite(generalized_box_iou(inverted, valid)).all()
    assert torch.isfinite(elementwise_generalized_box_iou(inverted, valid)).all()
