"""Hungarian matcher, GO-LSD union matching and the denoising assignment."""

from __future__ import annotations

import itertools

import pytest
import torch
from dfine_loss_testing import NUM_CLASSES, make_matcher, random_boxes, random_targets

from dfine.loss import denoising_matching, union_matching
from dfine.loss.matcher import INVALID_COST


def _random_predictions(batch: int, queries: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, queries, NUM_CLASSES, generator=gen)
    boxes = torch.stack([random_boxes(queries, gen) for _ in range(batch)])
    return logits, boxes, gen


def _assert_same(matching_a, matching_b):
    assert len(matching_a) == len(matching_b)
    for (qa, ta), (qb, tb) in zip(matching_a, matching_b):
        assert qa.dtype == torch.int64 and ta.dtype == torch.int64
        assert torch.equal(qa, qb) and torch.equal(ta, tb)


def test_matches_transformers_matcher():
    from transformers import DFineConfig
    from transformers.loss.loss_rt_detr import RTDetrHungarianMatcher

    logits, boxes, gen = _random_predictions(4, 25)
    targets = random_targets([3, 0, 7, 1], gen)
    expected = RTDetrHungarianMatcher(DFineConfig(num_labels=NUM_CLASSES))({"logits": logits, "pred_boxes": boxes},
                                                                          targets)
    _assert_same(make_matcher()(logits, boxes, targets), expected)


def test_batched_equals_per_image_and_empty_images():
    logits, boxes, gen = _random_predictions(3, 20, seed=1)
    targets = random_targets([4, 0, 6], gen)
    matcher = make_matcher()
    batched = matcher(logits, boxes, targets)
    single = [matcher(logits[i : i + 1], boxes[i : i + 1], [targets[i]])[0] for i in range(3)]
    _assert_same(batched, single)
    assert batched[1][0].numel() == 0 and batched[1][1].numel() == 0
    assert [len(q) for q, _ in batched] == [4, 0, 6]
    assert all(torch.equal(q, q.sort().values) for q, _ in batched)


def test_no_targets_at_all():
    logits, boxes, _ = _random_predictions(2, 10)
    empty = {"class_labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}
    result = make_matcher()(logits, boxes, [empty, empty])
    assert all(q.numel() == 0 and t.numel() == 0 for q, t in result)


def test_assignment_is_brute_force_optimum():
    logits, boxes, gen = _random_predictions(1, 5, seed=3)
    targets = random_targets([3], gen)
    matcher = make_matcher()
    cost = matcher.cost_matrix(logits, boxes, targets)[0, :, :3]
    best = min(sum(cost[q, t].item() for t, q in enumerate(perm)) for perm in itertools.permutations(range(5), 3))
    queries, tgts = matcher(logits, boxes, targets)[0]
    assert cost[queries, tgts].sum().item() == pytest.approx(best, abs=1e-9)


def test_cost_matrix_formula():
    logits = torch.tensor([[[0.4, -2.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2]]])
    targets = [{"class_labels": torch.tensor([0]), "boxes": torch.tensor([[0.55, 0.5, 0.2, 0.2]])}]
    p = torch.sigmoid(torch.tensor(0.4)).item()
    focal = 0.25 * (1 - p) ** 2 * -torch.log(torch.tensor(p + 1e-8)).item() - 0.75 * p**2 * -torch.log(
        torch.tensor(1 - p + 1e-8)
    ).item()
    iou = 0.6  # intersection 0.03, union 0.05, hull = union (same height, adjacent) -> GIoU = IoU
    expected = 2 * focal + 5 * 0.05 + 2 * -iou
    assert make_matcher().cost_matrix(logits, boxes, targets)[0, 0, 0].item() == pytest.approx(expected, abs=1e-6)


def test_non_finite_predictions_are_matched_last():
    logits, boxes, gen = _random_predictions(1, 6, seed=4)
    boxes[0, 2] = float("nan")
    logits[0, 4] = float("inf")
    targets = random_targets([4], gen)
    matcher = make_matcher()
    cost = matcher.cost_matrix(logits, boxes, targets)
    assert torch.isfinite(cost).all() and (cost[0, 2, :4] == INVALID_COST).all()
    queries, _ = matcher(logits, boxes, targets)[0]
    assert 2 not in queries.tolist()


def test_union_matching_most_frequent_pair_wins():
    pairs = [
        (torch.tensor([0, 1]), torch.tensor([1, 0])),  # final
        (torch.tensor([0, 2]), torch.tensor([1, 0])),  # aux 0
        (torch.tensor([0, 2, 3]), torch.tensor([0, 0, 1])),  # aux 1
        (torch.tensor([3]), torch.tensor([0])),  # pre
    ]
    queries, tgts = union_matching([[p] for p in pairs])[0]
    # q0: gt1 x2 vs gt0 x1 -> 1; q1 -> 0; q2: gt0 x2 -> 0; q3: gt1 x1 vs gt0 x1, a tie -> smallest target 0.
    assert queries.tolist() == [0, 1, 2, 3]
    assert tgts.tolist() == [1, 0, 0, 0]


def test_union_matching_per_image_and_empty():
    empty = (torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    a = [(torch.tensor([4, 1]), torch.tensor([0, 1])), empty]
    b = [(torch.tensor([4, 2]), torch.tensor([1, 1])), empty]
    c = [(torch.tensor([4, 1]), torch.tensor([1, 1])), empty]
    result = union_matching([a, b, c])
    assert result[0][0].tolist() == [1, 2, 4] and result[0][1].tolist() == [1, 1, 1]
    assert result[1][0].numel() == 0


def test_denoising_matching_tiles_targets():
    targets = [{"boxes": torch.zeros(2, 4)}, {"boxes": torch.zeros(0, 4)}, {"boxes": torch.zeros(1, 4)}]
    positive = [torch.tensor([0, 1, 6, 7, 12, 13]), torch.zeros(0, dtype=torch.long), torch.tensor([0, 6, 12])]
    result = denoising_matching(positive, 3, targets)
    assert result[0][1].tolist() == [0, 1, 0, 1, 0, 1]
    assert result[1][0].numel() == 0
    assert result[2][0].tolist() == [0, 6, 12] and result[2][1].tolist() == [0, 0, 0]
    with pytest.raises(ValueError):
        denoising_matching([torch.tensor([0, 1])], 3, targets[:1])
