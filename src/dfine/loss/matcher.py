"""Assignments between predictions and targets: Hungarian matching, GO-LSD union matching, denoising matching.

A matching is a list with one ``(pred_idx, tgt_idx)`` pair of int64 CPU tensors per image, as the
original's ``src/zoo/dfine/matcher.py: HungarianMatcher`` returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from dfine.loss.functional import cxcywh_to_xyxy_clamped
from dfine.loss.masks import mask_match_costs, resize_target_masks
from dfine.ops.boxes import box_cxcywh_to_xyxy, generalized_box_iou

__all__ = ["HungarianMatcher", "Matching", "denoising_matching", "union_matching"]

Matching = list[tuple[Tensor, Tensor]]

# Cost given to pairs whose cost is NaN or infinite (a diverged prediction). The original replaces NaN by 1.0, which
# is *cheaper* than most valid pairs, so a broken query can steal a target; Hugging Face uses float32's max, whose
# magnitude wipes out the precision of the valid costs inside the solver's float64 arithmetic. A large finite value
# keeps such pairs last in line without either problem (valid costs are O(10)).
INVALID_COST = 1e8


def _empty_pair() -> tuple[Tensor, Tensor]:
    return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)


class HungarianMatcher(nn.Module):
    """One-to-one assignment minimising ``class_cost·focal + bbox_cost·L1 + giou_cost·(−GIoU)`` per image.

    Class cost for prediction q and target t with ``p = σ(logit_{q, class(t)})``:
    ``α(1−p)^γ·(−log(p + 1e-8)) − (1−α)p^γ·(−log(1 − p + 1e-8))``. L1 is on cxcywh; GIoU on corner boxes (predicted
    ``w, h`` clamped at 0 as the original does). Non-finite costs become :data:`INVALID_COST`.

    The cost is computed for the whole batch at once, on the predictions' device, against the targets padded to the
    largest per-image count (``B × Q × T_max``, not the original's ``B·Q × ΣT`` cross-image matrix; the GIoU term
    image by image, as torchvision's pairwise GIoU before 0.24 takes no batch dimension); the assignment itself runs
    on CPU with scipy's ``linear_sum_assignment``, one image at a time.

    The costs, α and γ are a config's ``matcher_*`` fields: :func:`dfine.loss.build_matcher` passes them.

    Segmentation (D-FINE-seg 0.6.2's ``matcher.py``): when mask logits are passed and a target has ``masks``,
    ``mask_cost·focal + dice_cost·(1 − Dice)`` over the full mask (:func:`dfine.loss.masks.mask_match_costs`) is
    added for that image's targets; images without masks keep the box costs only.
    """

    def __init__(
        self,
        class_cost: float,
        bbox_cost: float,
        giou_cost: float,
        alpha: float,
        gamma: float,
        mask_cost: float = 0.0,
        dice_cost: float = 0.0,
    ) -> None:
        super().__init__()
        if class_cost == bbox_cost == giou_cost == 0:
            raise ValueError("HungarianMatcher: at least one of class_cost, bbox_cost, giou_cost must be non-zero")
        self.class_cost = class_cost
        self.bbox_cost = bbox_cost
        self.giou_cost = giou_cost
        self.alpha = alpha
        self.gamma = gamma
        self.mask_cost = mask_cost
        self.dice_cost = dice_cost

    @torch.no_grad()
    def cost_matrix(self, logits: Tensor, boxes: Tensor, targets: Sequence[Mapping[str, Tensor]],
                    masks: Tensor | None = None) -> Tensor:
        """Per-image matching costs, padded: (B, Q, T_max) float64 on CPU, non-finite entries replaced.

        Args:
            logits: (B, Q, C) class logits.
            boxes: (B, Q, 4) predicted boxes, normalised cxcywh.
            targets: B dicts with ``class_labels`` (n,) and ``boxes`` (n, 4) normalised cxcywh, and optionally
                ``masks`` (n, H, W) (resized to the logits' size here when they are not at it).
            masks: (B, Q, h, w) mask logits, or None for the box costs only.

        Returns:
            Costs; columns ``>= len(targets[i]["boxes"])`` of image i are padding.
        """
        batch_size, num_queries, _ = logits.shape
        device = logits.device
        sizes = [len(t["boxes"]) for t in targets]
        max_size = max(sizes, default=0)
        labels = torch.zeros(batch_size, max_size, dtype=torch.int64, device=device)
        # Padding boxes are a valid unit box so the padded columns stay finite; they are sliced off before solving.
        tgt_boxes = torch.full((batch_size, max_size, 4), 0.5, dtype=torch.float32, device=device)
        for i, target in enumerate(targets):
            labels[i, : sizes[i]] = target["class_labels"].to(device)
            tgt_boxes[i, : sizes[i]] = target["boxes"].to(device=device, dtype=torch.float32)

        prob = logits.float().sigmoid().gather(2, labels[:, None, :].expand(batch_size, num_queries, max_size))
        neg = (1 - self.alpha) * prob**self.gamma * -(1 - prob + 1e-8).log()
        pos = self.alpha * (1 - prob) ** self.gamma * -(prob + 1e-8).log()
        cost_class = pos - neg
        pred = boxes.float()
        cost_bbox = (pred[:, :, None, :] - tgt_boxes[:, None, :, :]).abs().sum(-1)
        pred_xyxy, tgt_xyxy = cxcywh_to_xyxy_clamped(pred), box_cxcywh_to_xyxy(tgt_boxes)
        cost_giou = -torch.stack([generalized_box_iou(p, t) for p, t in zip(pred_xyxy, tgt_xyxy, strict=True)])
        cost = self.bbox_cost * cost_bbox + self.class_cost * cost_class + self.giou_cost * cost_giou
        if masks is not None and (self.mask_cost or self.dice_cost):
            cost = cost + self._mask_costs(masks, targets, sizes, max_size)
        cost = cost.to(device="cpu", dtype=torch.float64)
        return torch.where(torch.isfinite(cost), cost, torch.full_like(cost, INVALID_COST))

    def _mask_costs(self, masks: Tensor, targets: Sequence[Mapping[str, Tensor]], sizes: list[int],
                    max_size: int) -> Tensor:
        """(B, Q, T_max) weighted mask costs; 0 for images without masks and for padding columns."""
        batch_size, num_queries, height, width = masks.shape
        truth = masks.new_zeros((batch_size, max_size, height, width), dtype=torch.float32)
        has_masks = torch.zeros(batch_size, dtype=torch.bool, device=masks.device)
        for i, target in enumerate(targets):
            given = target.get("masks")
            if sizes[i] and isinstance(given, Tensor) and given.numel():
                truth[i, : sizes[i]] = resize_target_masks(given.to(masks.device), (height, width))
                has_masks[i] = True
        if not has_masks.any():
            return masks.new_zeros((batch_size, num_queries, max_size), dtype=torch.float32)
        focal, dice = mask_match_costs(masks, truth, self.alpha, self.gamma)
        return (self.mask_cost * focal + self.dice_cost * dice) * has_masks[:, None, None]

    @torch.no_grad()
    def forward(self, logits: Tensor, boxes: Tensor, targets: Sequence[Mapping[str, Tensor]],
                masks: Tensor | None = None) -> Matching:
        """Match predictions to targets.

        Args:
            logits: (B, Q, C) class logits.
            boxes: (B, Q, 4) predicted boxes, normalised cxcywh.
            targets: B dicts with ``class_labels`` (n,) and ``boxes`` (n, 4) normalised cxcywh, and optionally
                ``masks`` (n, H, W).
            masks: (B, Q, h, w) mask logits: adds the mask costs (see the class docstring); None: boxes only.

        Returns:
            Per image ``(pred_idx, tgt_idx)``, int64 CPU tensors of length ``min(Q, n)``, ``pred_idx`` ascending.
            Images without targets get two empty tensors.
        """
        if len(targets) != logits.shape[0]:
            raise ValueError(f"HungarianMatcher: {len(targets)} targets for a batch of {logits.shape[0]} images")
        sizes = [len(t["boxes"]) for t in targets]
        if sum(sizes) == 0:
            return [_empty_pair() for _ in sizes]
        cost = self.cost_matrix(logits, boxes, targets, masks).numpy()
        result: Matching = []
        for i, size in enumerate(sizes):
            if size == 0:
                result.append(_empty_pair())
                continue
            rows, cols = linear_sum_assignment(cost[i, :, :size])
            result.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return result


def union_matching(matchings: Sequence[Matching]) -> Matching:
    """GO-LSD global-optimal matching: the union of several matchings (original: ``DFINECriterion._get_go_indices``).

    All ``(query, target)`` pairs of all matchings are pooled per image; every query that appears keeps the target it
    was paired with most often. Ties go to the smallest target index (the original breaks them by an unstable sort,
    i.e. arbitrarily). A target may end up with several queries.

    Args:
        matchings: K matchings of the same batch (final layer, each auxiliary layer, pre box, encoder).

    Returns:
        One ``(pred_idx, tgt_idx)`` pair per image, ``pred_idx`` ascending and unique.
    """
    if not matchings:
        raise ValueError("union_matching needs at least one matching")
    result: Matching = []
    for per_image in zip(*matchings, strict=True):
        queries = torch.cat([q.reshape(-1).cpu() for q, _ in per_image]).long()
        gts = torch.cat([t.reshape(-1).cpu() for _, t in per_image]).long()
        if queries.numel() == 0:
            result.append(_empty_pair())
            continue
        num_gt = int(gts.max()) + 1
        pairs, counts = torch.unique(queries * num_gt + gts, return_counts=True)  # sorted: query, then target
        pair_query, pair_gt = pairs // num_gt, pairs % num_gt
        # Order by query ascending, count descending, target ascending: stable sorts applied last-key-first.
        order = torch.sort(-counts, stable=True).indices
        order = order[torch.sort(pair_query[order], stable=True).indices]
        pair_query, pair_gt = pair_query[order], pair_gt[order]
        first = torch.ones_like(pair_query, dtype=torch.bool)
        first[1:] = pair_query[1:] != pair_query[:-1]
        result.append((pair_query[first], pair_gt[first]))
    return result


def denoising_matching(
    positive_idx: Sequence[Tensor], num_groups: int, targets: Sequence[Mapping[str, Tensor]]
) -> Matching:
    """The known assignment of contrastive-denoising queries (original:
    ``DFINECriterion.get_cdn_matched_indices``).

    Image i's positive slots (``num_groups · n_i`` of them, group-major) are matched to its targets tiled
    ``num_groups`` times.

    Args:
        positive_idx: per image, the indices of its positive denoising slots (``dn_positive_idx``).
        num_groups: K (``dn_num_group``).
        targets: B target dicts.

    Returns:
        One ``(dn_query_idx, tgt_idx)`` pair per image (CPU int64).
    """
    result: Matching = []
    for slots, target in zip(positive_idx, targets, strict=True):
        num_gt = len(target["boxes"])
        if num_gt == 0:
            result.append(_empty_pair())
            continue
        gt_idx = torch.arange(num_gt, dtype=torch.int64).repeat(num_groups)
        slots = torch.as_tensor(slots).reshape(-1).long().cpu()
        if slots.numel() != gt_idx.numel():
            raise ValueError(
                f"denoising meta: {slots.numel()} positive slots for {num_gt} targets x {num_groups} groups"
            )
        result.append((slots, gt_idx))
    return result
