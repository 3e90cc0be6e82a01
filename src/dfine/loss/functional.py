"""Pure D-FINE loss functions (D-FINE paper: FGL and DDF losses; the original repository's
``src/zoo/dfine/dfine_criterion.py: DFINECriterion``).

Every function here is a function of tensors only: no modules, no state, no matching. The criterion
(:mod:`dfine.loss.criterion`) decides which outputs, which matching and which normaliser each term gets.

Conventions used in the shapes below: ``B`` images, ``Q`` queries, ``C`` classes, ``M`` matched (query, target)
pairs, ``N`` = ``reg_max`` (the FDR distribution has ``N + 1`` bins per edge). A matching is given flattened as
``batch_idx`` (M,) and ``query_idx`` (M,) with the matched targets' ``labels`` (M,) and ``boxes`` (M, 4).
All boxes are normalised ``(cx, cy, w, h)``.

Where the original code (Peterande/D-FINE) and ``dfine.ops`` differ in one detail that matters for the loss, this
module follows the original: before any IoU / GIoU in the loss and the matcher, predicted widths and heights are
clamped at 0 (the original's cxcywh->xyxy conversion does that; ``dfine.ops.box_cxcywh_to_xyxy`` does not, which is
right for post-processing). Hugging Face instead clamps whole predicted boxes to [0, 1] (transformers'
``loss/loss_d_fine.py``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from dfine.ops.boxes import box_cxcywh_to_xyxy, elementwise_box_iou, elementwise_generalized_box_iou
from dfine.ops.fdr import bbox2distance, translate_gt

__all__ = [
    "DDF_BATCH_FACTOR",
    "DDF_TEMPERATURE",
    "FGLTargets",
    "box_losses",
    "cxcywh_to_xyxy_clamped",
    "ddf_balance",
    "decoupled_distillation_loss",
    "fgl_targets",
    "fine_grained_localization_loss",
    "matched_iou",
    "varifocal_loss",
]

#: DDF's distillation temperature T and the ``8`` of its ``8/B`` count scaling: constants of the original repository
#: (``src/zoo/dfine/dfine_criterion.py: DFINECriterion.loss_local``), not options of any released recipe or config.
DDF_TEMPERATURE = 5.0
DDF_BATCH_FACTOR = 8.0


def cxcywh_to_xyxy_clamped(boxes: Tensor) -> Tensor:
    """(..., 4) cxcywh -> (..., 4) xyxy with ``w, h`` clamped at 0 first (the original loss' conversion).

    A predicted box with a negative width would otherwise have a negative area and give IoU / GIoU values of the
    wrong sign; clamping makes it a degenerate (zero-area) box instead.
    """
    cx, cy, w, h = boxes.unbind(-1)
    return box_cxcywh_to_xyxy(torch.stack([cx, cy, w.clamp(min=0), h.clamp(min=0)], dim=-1))


@torch.no_grad()
def matched_iou(pred_boxes: Tensor, target_boxes: Tensor) -> Tensor:
    """IoU of matched prediction / target pairs, without gradient: (M, 4) x (M, 4) -> (M,).

    The IoU is a *weight or target* in VFL, FGL and DDF, never something to optimise through.
    """
    return elementwise_box_iou(cxcywh_to_xyxy_clamped(pred_boxes.detach()), box_cxcywh_to_xyxy(target_boxes))


def varifocal_loss(
    logits: Tensor,
    pred_boxes: Tensor,
    batch_idx: Tensor,
    query_idx: Tensor,
    target_labels: Tensor,
    target_boxes: Tensor,
    num_boxes: float,
    alpha: float,
    gamma: float,
) -> Tensor:
    """Varifocal loss as implemented in D-FINE (original: ``DFINECriterion.loss_labels_vfl``).

    Target score ``τ`` = IoU(sg(pred box), gt) on the matched class of a matched query, 0 everywhere else;
    weight = ``alpha · sg(σ(logit))^gamma · (1 − onehot) + τ``; per-element BCE-with-logits against ``τ``;
    normalised as the original: mean over queries, summed, times ``Q / num_boxes`` (= sum / num_boxes).

    Args:
        logits: (B, Q, C) class logits.
        pred_boxes: (B, Q, 4) predicted boxes (only the matched rows are read, detached).
        batch_idx, query_idx: (M,) the matching.
        target_labels: (M,) class index of each matched target, in ``[0, C)``.
        target_boxes: (M, 4) matched target boxes.
        num_boxes: normaliser (total number of targets, >= 1).
        alpha, gamma: focal weighting of the negatives (``DFineConfig.focal_loss_alpha`` / ``focal_loss_gamma``).

    Returns:
        Scalar loss.
    """
    iou = matched_iou(pred_boxes[batch_idx, query_idx], target_boxes).to(logits.dtype)
    onehot = torch.zeros_like(logits)
    onehot[batch_idx, query_idx, target_labels] = 1.0
    score = torch.zeros(logits.shape[:2], dtype=logits.dtype, device=logits.device)
    score[batch_idx, query_idx] = iou
    target_score = score.unsqueeze(-1) * onehot
    weight = alpha * logits.detach().sigmoid().pow(gamma) * (1 - onehot) + target_score
    loss = F.binary_cross_entropy_with_logits(logits, target_score, weight=weight, reduction="none")
    return loss.mean(1).sum() * logits.shape[1] / num_boxes


def matchability_aware_loss(
    logits: Tensor,
    pred_boxes: Tensor,
    batch_idx: Tensor,
    query_idx: Tensor,
    target_labels: Tensor,
    target_boxes: Tensor,
    num_boxes: float,
    gamma: float,
) -> Tensor:
    """DEIM's Matchability-Aware Loss (Huang et al., "DEIM: DETR with Improved Matching for Fast Convergence", CVPR
    2025, Eq. 4; the original's ``DEIMCriterion.loss_labels_mal`` with ``mal_alpha=None``).

    With ``q`` = IoU(sg(pred box), gt) of a matched query and ``p`` = σ(logit)::

        MAL(p, q, y) = −(q^γ log p + (1 − q^γ) log(1 − p))   for the matched class of a matched query (y = 1)
                       −p^γ log(1 − p)                         everywhere else (y = 0)

    i.e. BCE-with-logits against the target ``q^γ`` with weight 1 on positives and ``sg(p)^γ`` on negatives. Unlike
    VFL, a positive with a low IoU is not down-weighted by its own target (the weight stays 1), so the many
    low-quality matches that dense one-to-one matching produces still teach the classifier; and the negatives'
    focal weight has no α. Normalised as :func:`varifocal_loss`.

    Args:
        as :func:`varifocal_loss`; ``gamma``: the exponent on both the target IoU and the negative weight (DEIM:
        1.5).
    """
    iou = matched_iou(pred_boxes[batch_idx, query_idx], target_boxes).to(logits.dtype)
    onehot = torch.zeros_like(logits)
    onehot[batch_idx, query_idx, target_labels] = 1.0
    score = torch.zeros(logits.shape[:2], dtype=logits.dtype, device=logits.device)
    score[batch_idx, query_idx] = iou
    target_score = score.unsqueeze(-1).pow(gamma) * onehot
    weight = logits.detach().sigmoid().pow(gamma) * (1 - onehot) + onehot
    loss = F.binary_cross_entropy_with_logits(logits, target_score, weight=weight, reduction="none")
    return loss.mean(1).sum() * logits.shape[1] / num_boxes


def box_losses(pred_boxes: Tensor, target_boxes: Tensor, num_boxes: float) -> tuple[Tensor, Tensor]:
    """L1 and GIoU losses of matched boxes (original: ``DFINECriterion.loss_boxes``).

    Args:
        pred_boxes: (M, 4) matched predictions, cxcywh (L1 on the raw values, as the original: no [0, 1] clamp).
        target_boxes: (M, 4) their targets, cxcywh.
        num_boxes: normaliser (>= 1).

    Returns:
        ``(l1, giou)``: ``Σ|pred − gt|₁ / num_boxes`` and ``Σ(1 − GIoU) / num_boxes``, scalars.
    """
    l1 = F.l1_loss(pred_boxes, target_boxes, reduction="none").sum() / num_boxes
    giou = 1 - elementwise_generalized_box_iou(cxcywh_to_xyxy_clamped(pred_boxes), box_cxcywh_to_xyxy(target_boxes))
    return l1, giou.sum() / num_boxes


class FGLTargets(NamedTuple):
    """Two-bin FGL targets for M matched queries, flattened query-major / edge-minor, each (4M,).

    ``index`` is the float bin position in ``[0, N − 0.1]``; the loss uses ``floor(index)`` (weight ``weight_left``)
    and ``floor(index) + 1`` (weight ``weight_right``).
    """

    index: Tensor
    weight_left: Tensor
    weight_right: Tensor


@torch.no_grad()
def fgl_targets(reference: Tensor, target_boxes: Tensor, project: Tensor, reg_scale: Tensor | float) -> FGLTargets:
    """FGL targets: the GT edges as offsets from the FDR reference box, located between two bins of W.

    Args:
        reference: (M, 4) the layer's FDR reference ``R*`` (the detached pre box) of each matched query, cxcywh.
        target_boxes: (M, 4) matched targets, cxcywh.
        project: (N + 1,) the weighting vector W from :func:`dfine.ops.weighting_function`.
        reg_scale: the decoder's ``reg_scale`` (4, or 8 for D-FINE-X), the one W was built with.

    Returns:
        :class:`FGLTargets`, each (4M,).
    """
    offsets = bbox2distance(reference.detach(), box_cxcywh_to_xyxy(target_boxes), reg_scale)
    return FGLTargets(*translate_gt(offsets.reshape(-1), project))


def fine_grained_localization_loss(
    pred_corners: Tensor, targets: FGLTargets, iou: Tensor, num_boxes: float
) -> Tensor:
    """FGL: IoU-weighted two-bin interpolated cross-entropy (D-FINE paper, FGL loss; original:
    ``DFINECriterion.loss_local``, ``unimodal_distribution_focal_loss``).

    ``Σ_matched Σ_edges IoU · [w← · CE(logits, ⌊i⌋) + w→ · CE(logits, ⌊i⌋ + 1)] / num_boxes``.

    Args:
        pred_corners: (M, 4·(N+1)) FDR logits of the matched queries (edges left, top, right, bottom).
        targets: :class:`FGLTargets` of the same M queries.
        iou: (M,) detached IoU of each matched prediction with its target (the layer's own box).
        num_boxes: normaliser (>= 1).

    Returns:
        Scalar loss.
    """
    num_bins = pred_corners.shape[-1] // 4
    log_prob = pred_corners.reshape(-1, num_bins).log_softmax(dim=-1)
    left = targets.index.long()
    ce_left = -log_prob.gather(1, left[:, None]).squeeze(1)
    ce_right = -log_prob.gather(1, (left + 1)[:, None]).squeeze(1)
    loss = ce_left * targets.weight_left + ce_right * targets.weight_right
    return (loss * iou.detach().repeat_interleave(4)).sum() / num_boxes


def ddf_balance(
    num_matched: int, num_queries_total: int, batch_size: int, batch_factor: float = DDF_BATCH_FACTOR
) -> tuple[float, float]:
    """The DDF positive / negative balancing scales (original: ``DFINECriterion.loss_local``).

    ``s_pos = sqrt(#matched edges · 8/B)``, ``s_neg = sqrt(#unmatched edges · 8/B)`` with 4 edges per query and
    ``B`` the per-device batch size. The ``8/B`` factor multiplies both counts, so it cancels in the weighted mean
    :func:`decoupled_distillation_loss` forms; it is kept so the scales are the original's numbers.

    Args:
        num_matched: matched queries in the batch (M).
        num_queries_total: ``B · Q``.
        batch_size: B.
        batch_factor: the original's 8.
    """
    scale = batch_factor / max(batch_size, 1)
    return (4 * num_matched * scale) ** 0.5, (4 * (num_queries_total - num_matched) * scale) ** 0.5


def decoupled_distillation_loss(
    student_corners: Tensor,
    teacher_corners: Tensor,
    teacher_logits: Tensor,
    batch_idx: Tensor,
    query_idx: Tensor,
    iou: Tensor,
    balance: tuple[float, float] | None = None,
    temperature: float = DDF_TEMPERATURE,
    batch_factor: float = DDF_BATCH_FACTOR,
) -> Tensor:
    """DDF: the GO-LSD self-distillation of a shallower layer towards the last one (D-FINE paper, DDF loss;
    original: ``DFINECriterion.loss_local``).

    For every query q and edge e (matched or not)::

        KL_qe  = T² · Σ_n p_t(n) · (log p_t(n) − log p_s(n)),   p = softmax(corners_qe / T), teacher detached
        w_q    = IoU(pred_q, gt_q) if q is matched else max_c σ(teacher_logit_qc)    (detached)
        m_pos  = mean over matched (q, e) of w·KL,   m_neg = mean over unmatched (q, e) of w·KL   (0 if empty)
        L_DDF  = (s_pos · m_pos + s_neg · m_neg) / (s_pos + s_neg)

    with ``(s_pos, s_neg)`` from :func:`ddf_balance`: sqrt of the matched / unmatched edge counts times ``8/B``.
    The denoising branch passes the normal branch's scales (``balance``), as the original does.

    Args:
        student_corners: (B, Q, 4·(N+1)) the student layer's FDR logits.
        teacher_corners: (B, Q, 4·(N+1)) the teacher (last) layer's FDR logits (detached here).
        teacher_logits: (B, Q, C) the teacher layer's class logits.
        batch_idx, query_idx: (M,) the matched queries (each query at most once).
        iou: (M,) detached IoU of the student layer's matched boxes with their targets.
        balance: ``(s_pos, s_neg)``; None computes them from this matching.
        temperature: T (5).
        batch_factor: the original's 8 (only used when ``balance`` is None; it cancels anyway).

    Returns:
        Scalar loss.
    """
    batch_size, num_queries = student_corners.shape[:2]
    num_bins = student_corners.shape[-1] // 4
    student = (student_corners.reshape(-1, num_bins) / temperature).log_softmax(dim=-1)
    teacher = (teacher_corners.detach().reshape(-1, num_bins) / temperature).log_softmax(dim=-1)
    kl = F.kl_div(student, teacher, reduction="none", log_target=True).sum(-1) * temperature**2  # (B·Q·4,)

    with torch.no_grad():
        weight = teacher_logits.detach().sigmoid().amax(dim=-1)  # (B, Q)
        weight[batch_idx, query_idx] = iou.to(weight.dtype)
        matched = torch.zeros(batch_size, num_queries, dtype=torch.bool, device=weight.device)
        matched[batch_idx, query_idx] = True
        weight = weight.repeat_interleave(4, dim=-1).reshape(-1)
        matched = matched.repeat_interleave(4, dim=-1).reshape(-1)

    loss = weight * kl
    num_pos = int(batch_idx.numel())
    if balance is None:
        balance = ddf_balance(num_pos, batch_size * num_queries, batch_size, batch_factor)
    s_pos, s_neg = balance
    zero = loss.sum() * 0  # keeps the graph when one side is empty
    m_pos = loss[matched].mean() if num_pos > 0 else zero
    m_neg = loss[~matched].mean() if num_pos < loss.numel() // 4 else zero
    return (m_pos * s_pos + m_neg * s_neg) / (s_pos + s_neg)
