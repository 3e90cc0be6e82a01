"""Single loss terms: golden values from the formulas, and agreement with transformers' single-term methods."""

from __future__ import annotations

import math

import pytest
import torch
from dfine_loss_testing import NUM_CLASSES, VFL_ALPHA, VFL_GAMMA, random_boxes, random_targets

from dfine.loss import (
    box_losses,
    ddf_balance,
    decoupled_distillation_loss,
    fgl_targets,
    fine_grained_localization_loss,
    varifocal_loss,
)
from dfine.loss.functional import matched_iou
from dfine.ops import weighting_function

TOL = 1e-5


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _bce(x: float, t: float) -> float:
    p = _sigmoid(x)
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def _flatten(matching):
    batch = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(matching)])
    query = torch.cat([q for q, _ in matching])
    return batch, query


# ----------------------------------------------------------------------------------------------- golden values


def test_vfl_one_query_by_hand():
    # pred [0.4, 0.6]² vs gt shifted right by 0.05: intersection 0.03, union 0.05 -> IoU 0.6.
    logits = torch.tensor([[[0.3, -1.2]]])
    pred = torch.tensor([[[0.5, 0.5, 0.2, 0.2]]])
    gt = torch.tensor([[0.55, 0.5, 0.2, 0.2]])
    idx = torch.tensor([0])
    loss = varifocal_loss(logits, pred, idx, idx, torch.tensor([0]), gt, 1.0, VFL_ALPHA, VFL_GAMMA)
    iou = 0.6
    matched_term = iou * _bce(0.3, iou)  # weight = target score on the matched class
    negative_term = 0.75 * _sigmoid(-1.2) ** 2 * _bce(-1.2, 0.0)  # alpha p^gamma on the other class
    assert loss.item() == pytest.approx(matched_term + negative_term, abs=1e-6)
    assert matched_term == pytest.approx(0.4046130, abs=1e-6)  # 0.6 * (0.6·0.554355 + 0.4·0.854355)


def test_vfl_normalisation_is_sum_over_num_boxes():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 7, 3, generator=gen)
    pred = torch.stack([random_boxes(7, gen), random_boxes(7, gen)])
    empty = torch.zeros(0, dtype=torch.long)
    loss = varifocal_loss(logits, pred, empty, empty, empty, torch.zeros(0, 4), 4.0, VFL_ALPHA, VFL_GAMMA)
    p = logits.sigmoid()
    expected = (0.75 * p**2 * -torch.log1p(-p)).sum() / 4.0
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_fgl_uniform_distribution_gives_four_log_bins():
    # Uniform bin logits: CE = log(33) for any target bin, the two weights sum to 1, IoU = 1 (pred == gt).
    ref = torch.tensor([[0.5, 0.5, 0.3, 0.2]])
    gt = torch.tensor([[0.52, 0.47, 0.33, 0.25]])
    project = weighting_function(32, torch.tensor([0.5]), torch.tensor([4.0]))
    targets = fgl_targets(ref, gt, project, torch.tensor([4.0]))
    loss = fine_grained_localization_loss(torch.zeros(1, 132), targets, torch.ones(1), num_boxes=2.0)
    assert loss.item() == pytest.approx(4 * math.log(33) / 2, rel=1e-6)


def test_fgl_exact_bin_and_interpolation_by_hand():
    f64 = torch.float64  # exact bin edges need double precision
    reg_scale = torch.tensor([4.0], dtype=f64)
    project = weighting_function(32, torch.tensor([0.5], dtype=f64), reg_scale)
    w17 = project[17].item()
    ref = torch.tensor([[0.5, 0.5, 0.5, 0.5]], dtype=f64)  # w / reg_scale = 0.125: exact in binary
    # left edge exactly at offset W(16) = 0 (the reference edge), right edge halfway between W(16) and W(17).
    x1 = 0.25
    x2 = 0.5 + (reg_scale.item() / 2 + w17 / 2) * 0.5 / reg_scale.item()
    gt_xyxy = torch.tensor([[x1, 0.25, x2, 0.75]], dtype=f64)
    gt = torch.cat([(gt_xyxy[:, :2] + gt_xyxy[:, 2:]) / 2, gt_xyxy[:, 2:] - gt_xyxy[:, :2]], dim=1)
    targets = fgl_targets(ref, gt, project, reg_scale)
    # Bin masses per edge. An offset exactly on W(16) may land as (bin 15, weight_right ~1) because bbox2distance
    # adds 1e-16 to the divisor; the mass is what matters.
    mass = torch.zeros(4, 33, dtype=f64)
    left = targets.index.long()
    mass[torch.arange(4), left] += targets.weight_left
    mass[torch.arange(4), left + 1] += targets.weight_right
    expected = torch.zeros(4, 33, dtype=f64)
    expected[[0, 1, 3], 16] = 1.0
    expected[2, 16] = expected[2, 17] = 0.5
    assert torch.allclose(mass, expected, atol=1e-9)
    # A distribution peaked on bin 16 for every edge: the exact edges (left/top/bottom) cost ~0, the right edge
    # costs 0.5·CE(bin 16) + 0.5·CE(bin 17) = 0.5·(~0) + 0.5·100 with logits 100 on bin 16 and 0 elsewhere.
    corners = torch.zeros(1, 4, 33, dtype=f64)
    corners[..., 16] = 100.0
    iou = torch.tensor([0.5], dtype=f64)
    loss = fine_grained_localization_loss(corners.reshape(1, 132), targets, iou, num_boxes=1.0)
    assert loss.item() == pytest.approx(0.5 * 0.5 * 100.0, rel=1e-4)


def test_ddf_student_equal_teacher_is_zero():
    gen = torch.Generator().manual_seed(0)
    corners = torch.randn(2, 6, 132, generator=gen)
    logits = torch.randn(2, 6, 4, generator=gen)
    idx = torch.tensor([0, 1]), torch.tensor([3, 0])
    loss = decoupled_distillation_loss(corners, corners.clone(), logits, *idx, torch.tensor([0.4, 0.9]))
    assert loss.item() == 0.0


def test_ddf_by_hand():
    temperature, a, iou = 5.0, 3.0, 0.7
    student = torch.zeros(1, 2, 132, dtype=torch.float64)  # KL is a small difference
    student[0, 0, 0] = a  # query 0 (matched), left edge, bin 0
    teacher = torch.zeros(1, 2, 132, dtype=torch.float64)
    logits = torch.zeros(1, 2, 3, dtype=torch.float64)
    loss = decoupled_distillation_loss(student, teacher, logits, torch.tensor([0]), torch.tensor([0]),
                                       torch.tensor([iou], dtype=torch.float64), temperature=temperature)
    # KL(uniform || softmax(student/T)) for the one edge that differs; every other edge has KL 0.
    z = math.exp(a / temperature) + 32
    kl = sum((1 / 33) * (math.log(1 / 33) - math.log(q)) for q in [math.exp(a / temperature) / z] + [1 / z] * 32)
    m_pos = iou * temperature**2 * kl / 4  # mean over the 4 matched edges
    s = math.sqrt(4 * 8 / 1)  # one matched and one unmatched query, B = 1: s_pos = s_neg
    assert loss.item() == pytest.approx((m_pos * s + 0 * s) / (2 * s), rel=1e-9)


def test_ddf_balance_batch_factor_cancels_and_explicit_balance_is_used():
    assert ddf_balance(3, 20, 2) == pytest.approx((math.sqrt(12 * 4), math.sqrt(68 * 4)))
    gen = torch.Generator().manual_seed(1)
    s, t, lg = torch.randn(2, 5, 132, generator=gen), torch.randn(2, 5, 132, generator=gen), torch.randn(2, 5, 3)
    b, q, iou = torch.tensor([0, 1]), torch.tensor([1, 4]), torch.tensor([0.5, 0.8])
    own = decoupled_distillation_loss(s, t, lg, b, q, iou)
    assert own.item() == pytest.approx(decoupled_distillation_loss(s, t, lg, b, q, iou, batch_factor=1.0).item())
    other = decoupled_distillation_loss(s, t, lg, b, q, iou, balance=(1.0, 3.0))
    assert other.item() != pytest.approx(own.item())


def test_negative_predicted_size_is_clamped_not_inverted():
    pred = torch.tensor([[0.5, 0.5, -0.2, 0.2]])
    gt = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    assert matched_iou(pred, gt).item() == 0.0
    _, giou = box_losses(pred, gt, 1.0)
    assert math.isfinite(giou.item())


# ------------------------------------------------------------------------------------- against transformers


@pytest.fixture(params=[4.0, 8.0], ids=["reg_scale4", "reg_scale8"])
def hf_case(request):
    """Random outputs, targets and a matching, plus transformers' DFineLoss built with the same reg_scale."""
    from transformers import DFineConfig
    from transformers.loss.loss_d_fine import DFineLoss

    reg_scale = request.param
    gen = torch.Generator().manual_seed(7)
    batch, queries = 3, 12
    targets = random_targets([3, 0, 4], gen)
    matching = [
        (torch.tensor([5, 0, 9]), torch.tensor([2, 0, 1])),
        (torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)),
        (torch.tensor([1, 2, 3, 11]), torch.tensor([3, 1, 0, 2])),
    ]
    outputs = {
        "logits": torch.randn(batch, queries, NUM_CLASSES, generator=gen),
        "pred_boxes": torch.stack([random_boxes(queries, gen) for _ in range(batch)]),
        "pred_corners": torch.randn(batch, queries, 132, generator=gen),
        "ref_points": torch.stack([random_boxes(queries, gen) for _ in range(batch)]),
        "teacher_corners": torch.randn(batch, queries, 132, generator=gen),
        "teacher_logits": torch.randn(batch, queries, NUM_CLASSES, generator=gen),
    }
    hf = DFineLoss(DFineConfig(num_labels=NUM_CLASSES, reg_scale=reg_scale))
    return hf, outputs, targets, matching, reg_scale


def test_vfl_matches_transformers(hf_case):
    hf, outputs, targets, matching, _ = hf_case
    expected = hf.loss_labels_vfl(outputs, targets, matching, 7.0)["loss_vfl"]
    batch, query = _flatten(matching)
    labels = torch.cat([t["class_labels"][g] for t, (_, g) in zip(targets, matching)])
    boxes = torch.cat([t["boxes"][g] for t, (_, g) in zip(targets, matching)])
    ours = varifocal_loss(outputs["logits"], outputs["pred_boxes"], batch, query, labels, boxes, 7.0, VFL_ALPHA,
                          VFL_GAMMA)
    assert abs(ours.item() - expected.item()) < TOL


def test_boxes_match_transformers(hf_case):
    hf, outputs, targets, matching, _ = hf_case
    expected = hf.loss_boxes(outputs, targets, matching, 7.0)
    batch, query = _flatten(matching)
    boxes = torch.cat([t["boxes"][g] for t, (_, g) in zip(targets, matching)])
    l1, giou = box_losses(outputs["pred_boxes"][batch, query], boxes, 7.0)
    assert abs(l1.item() - expected["loss_bbox"].item()) < TOL
    assert abs(giou.item() - expected["loss_giou"].item()) < TOL


def test_fgl_and_ddf_match_transformers(hf_case):
    hf, outputs, targets, matching, reg_scale = hf_case
    expected = hf.loss_local(outputs, targets, matching, 7.0)
    batch, query = _flatten(matching)
    boxes = torch.cat([t["boxes"][g] for t, (_, g) in zip(targets, matching)])
    scale = torch.tensor([reg_scale])
    project = weighting_function(32, torch.tensor([0.5]), scale)
    fgl_t = fgl_targets(outputs["ref_points"][batch, query], boxes, project, scale)
    iou = matched_iou(outputs["pred_boxes"][batch, query], boxes)
    fgl = fine_grained_localization_loss(outputs["pred_corners"][batch, query], fgl_t, iou, 7.0)
    # transformers' DDF scales both counts by 1/B instead of 8/B: the factor cancels, the values agree.
    ddf = decoupled_distillation_loss(outputs["pred_corners"], outputs["teacher_corners"], outputs["teacher_logits"],
                                      batch, query, iou)
    assert abs(fgl.item() - expected["loss_fgl"].item()) < TOL
    assert abs(ddf.item() - expected["loss_ddf"].item()) < TOL
