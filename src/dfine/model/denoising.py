"""Contrastive denoising queries for training (DINO's, Zhang et al., arXiv 2203.03605; the original
repository's ``src/zoo/dfine/denoising.py: get_contrastive_denoising_training_group``).

Ground-truth boxes are copied into ``K`` groups of a positive (small noise) and a negative (large noise) copy,
with some labels flipped. The decoder learns to reconstruct positives and to reject negatives; an attention mask
keeps the groups and the matching queries from seeing each other's answers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from dfine.ops.boxes import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, inverse_sigmoid


def build_denoising_queries(
    targets: list[dict[str, Tensor]],
    num_classes: int,
    num_queries: int,
    class_embed: nn.Embedding,
    num_denoising: int = 100,
    label_noise_ratio: float = 0.5,
    box_noise_scale: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor, dict[str, Any]] | None:
    """Denoising content queries, reference logits, the self-attention mask and the bookkeeping for the loss.

    Args:
        targets: per image ``{"class_labels": (n,), "boxes": (n, 4) normalised cxcywh}``.
        num_classes: C; label C is the padding row of ``class_embed``.
        num_queries: the number of matching queries that follow the denoising ones.
        class_embed: the (C + 1, d) label embedding.

    Returns:
        ``(queries (B, D, d), reference_logits (B, D, 4), attn_mask (D+Q, D+Q) bool (True = may attend), meta)``
        or None when no image has a ground-truth box. ``meta`` holds ``dn_positive_idx`` (indices of the positive
        slots per image), ``dn_num_group`` (K) and ``dn_num_split`` ([D, Q]).
    """
    counts = [len(t["class_labels"]) for t in targets]
    max_gt = max(counts, default=0)
    if max_gt == 0:
        return None
    groups = max(1, num_denoising // max_gt)
    batch = len(targets)
    device = class_embed.weight.device

    labels = torch.full((batch, max_gt), num_classes, dtype=torch.long, device=device)
    boxes = torch.zeros(batch, max_gt, 4, device=device)
    real = torch.zeros(batch, max_gt, dtype=torch.bool, device=device)
    for i, (target, n) in enumerate(zip(targets, counts)):
        if n:
            labels[i, :n] = target["class_labels"].to(device)
            boxes[i, :n] = target["boxes"].to(device=device, dtype=boxes.dtype)
            real[i, :n] = True

    # Each group: max_gt positive slots then max_gt negative slots.
    labels = labels.repeat(1, 2 * groups)
    boxes = boxes.repeat(1, 2 * groups, 1)
    real = real.repeat(1, 2 * groups)
    negative = torch.zeros(batch, 2 * max_gt, 1, device=device)
    negative[:, max_gt:] = 1
    negative = negative.repeat(1, groups, 1)
    positive = (1 - negative.squeeze(-1)) * real
    dn_positive_idx = [row.nonzero().squeeze(-1) for row in positive]

    if label_noise_ratio > 0:
        flip = (torch.rand(labels.shape, device=device) < label_noise_ratio * 0.5) & real
        labels = torch.where(flip, torch.randint_like(labels, 0, num_classes), labels)

    if box_noise_scale > 0:
        corners = box_cxcywh_to_xyxy(boxes)
        half_size = (boxes[..., 2:] * 0.5).repeat(1, 1, 2) * box_noise_scale
        sign = torch.randint_like(boxes, 0, 2) * 2.0 - 1.0
        # positives move by less than half the box size, negatives by one to two halves
        magnitude = torch.rand_like(boxes) + negative
        corners = (corners + sign * magnitude * half_size).clamp(0, 1)
        boxes = box_xyxy_to_cxcywh(corners)
        boxes = boxes.abs()  # a clip can cross the corners; the original flips the negative sizes back
    reference_logits = inverse_sigmoid(boxes)
    queries = class_embed(labels)

    num_dn = 2 * max_gt * groups
    total = num_dn + num_queries
    blocked = torch.zeros(total, total, dtype=torch.bool, device=device)
    blocked[num_dn:, :num_dn] = True  # matching queries must not see the answers
    for g in range(groups):
        start, end = 2 * max_gt * g, 2 * max_gt * (g + 1)
        blocked[start:end, :start] = True
        blocked[start:end, end:num_dn] = True
    meta = {"dn_positive_idx": dn_positive_idx, "dn_num_group": groups, "dn_num_split": [num_dn, num_queries]}
    return queries, reference_logits, ~blocked, meta
