"""The D-FINE training criterion with the original repository's wiring and GO-LSD
(``src/zoo/dfine/dfine_criterion.py: DFINECriterion``).

Terms (``L`` decoder layers; denoising terms only when the outputs carry denoising meta values):

================  ==================================  =================================================
suffix            output                              terms
================  ==================================  =================================================
(none)            layer L−1                           vfl, bbox, giou, fgl
``_aux_{i}``      layer i, i = 0 … L−2                vfl, bbox, giou, fgl, ddf (teacher: layer L−1)
``_pre``          pre box head                        vfl, bbox, giou
``_enc_0``        top-k encoder proposals             vfl, bbox, giou
``_dn_{i}``       denoising rows of layer i, all L    vfl, bbox, giou, fgl, ddf (teacher: dn layer L−1)
``_dn_pre``       denoising rows of the pre head      vfl, bbox, giou
================  ==================================  =================================================

That is ``4 + 5(L−1) + 3 + 3 + 5L + 3`` terms: 38 for L = 3, 68 for L = 6 (20 and 35 without denoising).

Segmentation (D-FINE-seg 0.6.2, :mod:`dfine.loss.masks`): when the outputs carry ``intermediate_predicted_masks``,
the criterion weights ``loss_mask_bce`` / ``loss_mask_dice`` and some target has ``masks``, the final layer, every
auxiliary layer and every denoising layer get both mask terms (``2(2L − 1)`` more: 10 for L = 3), each on the
output's own matching, never the GO union; the pre head and the encoder proposals have no masks. The matcher then
adds the mask costs for the final and auxiliary layers. Targets without ``masks`` give those terms no pairs.

Eval-mode outputs (the evaluated layer only: ``intermediate_logits`` (B, 1, Q, C), one layer of corners, no
denoising) get the final-layer and ``_enc_0`` terms, 7 in all, with the GO union of those two matchings: the
validation loss on what the eval forward computes, as transformers gives one whenever labels are passed.

Matching (D-FINE paper, section "Global Optimal Localization Self-Distillation"; original:
``DFINECriterion._get_go_indices``): the final layer, every auxiliary layer, the pre head and the encoder proposals are
matched separately; VFL of each uses its own matching and ``num_boxes``. Their union (``indices_go``, each query
keeping its most frequent target) with ``num_boxes_go`` = its size drives bbox/giou/fgl/ddf of final, aux and pre,
and bbox/giou of the encoder (the original passes ``indices_go`` to the encoder's ``boxes`` loss only — its ``local``
loss needs corners, which the encoder does not have). Denoising rows use the known assignment (positive slots ↔
targets tiled K times) and the normaliser ``num_boxes · K`` for every term.

Differences from Hugging Face's ``DFineForObjectDetectionLoss`` (transformers' ``loss/loss_d_fine.py``), all on
purpose, to reproduce the original training:

- aux i supervises layer i's logits/boxes together with layer i's corners (HF pairs layer i−1's logits/boxes with
  layer i's corners, so the pre head counts as aux 0 and layer L−2's logits/boxes are never supervised);
- the final layer gets FGL; the last denoising layer is supervised (its DDF is 0); ``_pre``, ``_enc_0`` and
  ``_dn_pre`` terms exist as separate names;
- GO-LSD union matching for the box and local losses (HF matches every output on its own);
- DDF's positive/negative balance in the denoising branch reuses the normal branch's counts (HF recounts);
- ``reg_scale`` and ``up`` are the model's tensors, passed in (HF uses ``config.reg_scale``: wrong for D-FINE-X);
- predicted boxes are not clamped to [0, 1]; only their ``w, h`` are clamped at 0 for IoU/GIoU, as the original;
- every term passes ``nan_to_num(nan=0)`` as the original (HF does not).

The returned dict holds the WEIGHTED terms, like Hugging Face's ``loss_dict`` and the original: the total loss is
their sum. The module keeps no state between calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from dfine.errors import DFineError
from dfine.loss.functional import (
    DDF_BATCH_FACTOR,
    DDF_TEMPERATURE,
    FGLTargets,
    box_losses,
    ddf_balance,
    decoupled_distillation_loss,
    fgl_targets,
    fine_grained_localization_loss,
    matchability_aware_loss,
    matched_iou,
    varifocal_loss,
)
from dfine.loss.masks import MASK_LOSS_NAMES, cropped_mask_losses, resize_target_masks
from dfine.loss.matcher import HungarianMatcher, Matching, denoising_matching, union_matching
from dfine.ops import weighting_function

__all__ = ["LOSS_NAMES", "DFineCriterion"]

#: D-FINE's base terms; the weights themselves are a config's ``weight_loss_*`` fields.
LOSS_NAMES = ("loss_vfl", "loss_bbox", "loss_giou", "loss_fgl", "loss_ddf")
#: The classification term: ``loss_vfl`` (D-FINE) or ``loss_mal`` (DEIM's Matchability-Aware Loss), not both.
CLASSIFICATION_LOSSES = ("loss_vfl", "loss_mal")
_KNOWN = (*LOSS_NAMES, "loss_mal", *MASK_LOSS_NAMES)


class _Assignment(NamedTuple):
    """A matching flattened over the batch, with its targets gathered and its normaliser."""

    batch_idx: Tensor  # (M,)
    query_idx: Tensor  # (M,)
    labels: Tensor  # (M,)
    boxes: Tensor  # (M, 4)
    num_boxes: float
    mask_pairs: Tensor | None = None  # (M,) bool: the pairs whose image has masks (segmentation only)
    masks: Tensor | None = None  # (M', h, w) the target masks of those pairs, at the logits' size


def _gather_mask_rows(masks: Tensor, reads: Sequence[tuple[int, int, _Assignment]]) -> list[Tensor]:
    """The mask logits of every (layer, row offset, assignment) read's mask pairs, in one indexing of ``masks``
    (B, L, Q_tot, h, w): each separate slice or index of that stack would allocate and fill a gradient of its
    whole size in the backward pass, which cost more than the mask losses themselves."""
    batch, layer, query, counts = [], [], [], []
    for index, offset, assignment in reads:
        pairs = assignment.mask_pairs
        assert pairs is not None
        batch.append(assignment.batch_idx[pairs])
        query.append(assignment.query_idx[pairs] + offset)
        layer.append(torch.full_like(batch[-1], index))
        counts.append(len(batch[-1]))
    rows = masks[torch.cat(batch), torch.cat(layer), torch.cat(query)].float()
    return list(rows.split(counts))


class _Local(NamedTuple):
    """What the FGL/DDF terms of one branch share: computed once per forward call, passed around."""

    fgl: FGLTargets
    balance: tuple[float, float]  # DDF (s_pos, s_neg), from the normal branch's GO matching


def _field(outputs: Any, name: str) -> Any:
    """Read a model output field by key (dict / ModelOutput) or attribute (dataclass)."""
    if isinstance(outputs, Mapping):
        return outputs.get(name)
    return getattr(outputs, name, None)


def _global_mean_counts(counts: Sequence[int], device: torch.device) -> list[float]:
    """Counts summed over ranks and divided by the world size, each at least 1 (as the original's
    ``DFINECriterion.forward``); one all-reduce."""
    values = torch.tensor([float(c) for c in counts], dtype=torch.float32, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(values)
        values = values / dist.get_world_size()
    return values.clamp(min=1).tolist()


def _assign(matching: Matching, targets: Sequence[Mapping[str, Tensor]], num_boxes: float,
            with_masks: bool = False) -> _Assignment:
    device = targets[0]["boxes"].device
    batch_idx = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(matching)]).to(device)
    query_idx = torch.cat([q for q, _ in matching]).to(device)
    labels = torch.cat([t["class_labels"][g.to(device)] for t, (_, g) in zip(targets, matching, strict=True)])
    boxes = torch.cat([t["boxes"][g.to(device)] for t, (_, g) in zip(targets, matching, strict=True)])
    if not with_masks:
        return _Assignment(batch_idx, query_idx, labels, boxes.reshape(-1, 4), num_boxes)
    pairs = torch.cat([torch.full((len(g),), "masks" in t, dtype=torch.bool)
                       for t, (_, g) in zip(targets, matching, strict=True)]).to(device)
    masks = torch.cat([t["masks"][g.to(device)] for t, (_, g) in zip(targets, matching, strict=True) if "masks" in t])
    return _Assignment(batch_idx, query_idx, labels, boxes.reshape(-1, 4), num_boxes, pairs, masks)


class DFineCriterion(nn.Module):
    """D-FINE training loss with the original wiring (see the module docstring for the terms and the matching).

    :func:`dfine.loss.build_criterion` makes one from a :class:`~dfine.config.DFineConfig`, whose defaults are every
    released recipe's values; the config is the only place those numbers are written.

    Args:
        num_classes: C, the number of class logits.
        matcher: the Hungarian matcher (:func:`dfine.loss.build_matcher`).
        weight_dict: weight of each base term (:data:`LOSS_NAMES`: ``loss_vfl``, ``loss_bbox``, ``loss_giou``,
            ``loss_fgl``, ``loss_ddf``). A base term left out is neither computed nor returned.
        alpha: VFL negative weight α (``focal_loss_alpha``).
        gamma: VFL focusing γ (``focal_loss_gamma``).
        reg_max: N, the last FDR bin index (``max_num_bins``).
        ddf_temperature: DDF temperature T.
        ddf_batch_factor: the ``8`` in DDF's ``8/B`` count scaling.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        weight_dict: Mapping[str, float],
        alpha: float,
        gamma: float,
        reg_max: int,
        ddf_temperature: float = DDF_TEMPERATURE,
        ddf_batch_factor: float = DDF_BATCH_FACTOR,
        mal_gamma: float = 1.5,
    ) -> None:
        super().__init__()
        weight_dict = dict(weight_dict)
        unknown = sorted(set(weight_dict) - set(_KNOWN))
        if unknown:
            raise ValueError(f"DFineCriterion: unknown loss names {unknown}; known: {sorted(_KNOWN)}")
        if all(name in weight_dict for name in CLASSIFICATION_LOSSES):
            raise ValueError("DFineCriterion: weight loss_vfl or loss_mal, not both (one classification loss)")
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.alpha = alpha
        self.gamma = gamma
        self.reg_max = reg_max
        self.ddf_temperature = ddf_temperature
        self.ddf_batch_factor = ddf_batch_factor
        self.mal_gamma = mal_gamma

    def forward(
        self, outputs: Any, targets: Sequence[Mapping[str, Tensor]], up: Tensor, reg_scale: Tensor
    ) -> dict[str, Tensor]:
        """Compute every weighted loss term.

        Args:
            outputs: the model's training outputs (ARCHITECTURE.md "Training outputs"), by key or attribute:
                ``intermediate_logits`` (B, L+1, Q_tot, C), ``intermediate_reference_points`` (B, L+1, Q_tot, 4),
                ``intermediate_predicted_corners`` (B, L, Q_tot, 4(N+1)), ``initial_reference_points``
                (B, L, Q_tot, 4), ``enc_topk_logits`` (B, Q, C), ``enc_topk_bboxes`` (B, Q, 4),
                ``denoising_meta_values`` (dict or None; its ``dn_num_split[0]`` first rows are denoising queries).
            targets: B dicts with ``class_labels`` LongTensor (n,) and ``boxes`` FloatTensor (n, 4), normalised
                cxcywh; other keys are ignored.
            up: the decoder's ``up`` tensor (1,).
            reg_scale: the decoder's ``reg_scale`` tensor (1,) (8 for D-FINE-X).

        Returns:
            ``{name: weighted scalar}``; the total loss is the sum of the values.
        """
        logits = _field(outputs, "intermediate_logits")
        device = logits.device
        # The loss runs in float32 whatever the model's autocast did (the original calls it with autocast off).
        with torch.autocast(device_type=device.type, enabled=False):
            return self._forward(outputs, targets, up, reg_scale)

    def _forward(
        self, outputs: Any, targets: Sequence[Mapping[str, Tensor]], up: Tensor, reg_scale: Tensor
    ) -> dict[str, Tensor]:
        logits = _field(outputs, "intermediate_logits").float()
        boxes = _field(outputs, "intermediate_reference_points").float()
        corners = _field(outputs, "intermediate_predicted_corners").float()
        refs = _field(outputs, "initial_reference_points").float()
        enc_logits = _field(outputs, "enc_topk_logits").float()
        enc_boxes = _field(outputs, "enc_topk_bboxes").float()
        meta = _field(outputs, "denoising_meta_values")
        batch_size, num_outputs, _, num_classes = logits.shape
        num_layers = corners.shape[1]
        device = logits.device
        # Training outputs stack (pre head, layer 0 … L−1); eval outputs hold the evaluated layer only, which gets
        # the final-layer terms (with the encoder's), as transformers computes an eval loss on what eval returns.
        eval_layout = num_outputs == num_layers == 1
        if num_outputs != num_layers + 1 and not eval_layout:
            raise ValueError(f"intermediate_logits has {num_outputs} outputs; expected L + 1 = {num_layers + 1} "
                             "(training outputs) or 1 with 1 layer of corners (eval outputs)")
        if eval_layout and meta is not None:
            raise ValueError("denoising_meta_values with eval outputs (one decoder layer); denoising needs the "
                             "training outputs of every layer")
        if num_classes != self.num_classes:
            raise ValueError(f"the model gives {num_classes} class logits; the criterion expects {self.num_classes}")
        if len(targets) != batch_size:
            raise ValueError(f"{len(targets)} targets for a batch of {batch_size} images")
        masks = _field(outputs, "intermediate_predicted_masks")
        if not any(name in self.weight_dict for name in MASK_LOSS_NAMES):
            masks = None
        targets = self._prepare_targets(targets, device, None if masks is None else tuple(masks.shape[-2:]))
        if not any("masks" in t for t in targets):
            masks = None  # a batch of boxes only: detection alone, as D-FINE-seg
        if masks is not None and masks.shape[1] != num_layers:
            raise ValueError(f"intermediate_predicted_masks has {masks.shape[1]} layers; expected the {num_layers} "
                             "decoder layers of the corners")
        project = weighting_function(self.reg_max, up.detach().float(), reg_scale.detach().float())
        reg_scale = reg_scale.detach().float()

        num_dn = int(meta["dn_num_split"][0]) if meta is not None else 0
        logits_n, boxes_n = logits[:, :, num_dn:], boxes[:, :, num_dn:]
        corners_n, refs_n = corners[:, :, num_dn:], refs[:, :, num_dn:]
        with_masks = masks is not None
        # mask logits of layer i's matching queries for the matcher, which needs no gradient (the layers have no
        # pre entry: index i is decoder layer i); the losses read their rows in one gather below
        detached = masks.detach() if masks is not None else None

        def layer_masks(i: int) -> Tensor | None:
            return detached[:, i, num_dn:].float() if detached is not None else None

        # --- Matching: each output on its own, then the GO-LSD union. ---
        last = num_outputs - 1  # index of the final layer in the (pre, layer 0, ...) stacks
        num_aux = 0 if eval_layout else num_layers - 1
        match_final = self.matcher(logits_n[:, last], boxes_n[:, last], targets, masks=layer_masks(num_layers - 1))
        match_aux = [self.matcher(logits_n[:, i + 1], boxes_n[:, i + 1], targets, masks=layer_masks(i))
                     for i in range(num_aux)]
        match_pre = [] if eval_layout else [self.matcher(logits_n[:, 0], boxes_n[:, 0], targets)]
        match_enc = self.matcher(enc_logits, enc_boxes, targets)
        match_go = union_matching([match_final, *match_aux, *match_pre, match_enc])
        num_gt = sum(len(t["boxes"]) for t in targets)
        num_go = sum(len(q) for q, _ in match_go)
        num_boxes, num_boxes_go = _global_mean_counts([num_gt, num_go], device)

        go = _assign(match_go, targets, num_boxes_go)
        corner = num_layers - 1  # the final layer in the corner / reference stacks
        local = _Local(
            fgl=fgl_targets(refs_n[:, corner][go.batch_idx, go.query_idx], go.boxes, project, reg_scale),
            balance=ddf_balance(len(go.batch_idx), batch_size * logits_n.shape[2], batch_size, self.ddf_batch_factor),
        )

        own_final = _assign(match_final, targets, num_boxes, with_masks)
        own_aux = [_assign(match, targets, num_boxes, with_masks) for match in match_aux]
        dn = self._denoising_assignment(meta, targets, num_dn, num_boxes, with_masks)
        mask_rows: list[Tensor | None] = [None] * (1 + num_aux + num_layers)
        if masks is not None:
            reads = [(corner, num_dn, own_final), *((i, num_dn, own_aux[i]) for i in range(num_aux))]
            reads += [(i, 0, dn) for i in range(num_layers)] if dn is not None else []
            mask_rows[:len(reads)] = _gather_mask_rows(masks, reads)

        losses: dict[str, Tensor] = {}
        teacher = (corners_n[:, corner], logits_n[:, last])
        self._layer(losses, "", logits_n[:, last], boxes_n[:, last], corners_n[:, corner], own_final, go, local,
                    teacher=None, mask_rows=mask_rows[0])
        for i in range(num_aux):
            self._layer(losses, f"_aux_{i}", logits_n[:, i + 1], boxes_n[:, i + 1], corners_n[:, i], own_aux[i], go,
                        local, teacher=teacher, mask_rows=mask_rows[1 + i])
        for match in match_pre:
            self._layer(losses, "_pre", logits_n[:, 0], boxes_n[:, 0], None,
                        _assign(match, targets, num_boxes), go, local, teacher=None)
        self._layer(losses, "_enc_0", enc_logits, enc_boxes, None,
                    _assign(match_enc, targets, num_boxes), go, local, teacher=None)

        if meta is not None:
            self._denoising(losses, dn, logits, boxes, corners, refs, num_dn, local, project, reg_scale, with_masks,
                            mask_rows[1 + num_aux:])
        return {name: torch.nan_to_num(value, nan=0.0) for name, value in losses.items()}

    def _prepare_targets(self, targets: Sequence[Mapping[str, Tensor]], device: torch.device,
                         mask_size: tuple[int, int] | None = None) -> list[dict]:
        """Labels and boxes on ``device``; with ``mask_size``, also the ``masks`` of the targets that have them,
        resized once for every matcher and loss call (:func:`dfine.loss.masks.resize_target_masks`)."""
        prepared = []
        for target in targets:
            labels = torch.as_tensor(target["class_labels"], device=device).long().reshape(-1)
            boxes = torch.as_tensor(target["boxes"], device=device).float().reshape(-1, 4)
            if labels.numel() != boxes.shape[0]:
                raise DFineError(f"a target has {labels.numel()} class labels but {boxes.shape[0]} boxes")
            prepared.append({"class_labels": labels, "boxes": boxes})
            given = target.get("masks")
            if mask_size is not None and isinstance(given, Tensor):
                if given.dim() != 3 or given.shape[0] != boxes.shape[0]:
                    raise DFineError(f"a target has {boxes.shape[0]} boxes but masks of shape {tuple(given.shape)} "
                                     "(expected one (H, W) mask per box)")
                prepared[-1]["masks"] = resize_target_masks(given.to(device), mask_size)
        all_labels = torch.cat([t["class_labels"] for t in prepared])
        if all_labels.numel() and (int(all_labels.min()) < 0 or int(all_labels.max()) >= self.num_classes):
            raise DFineError(
                f"target class labels span {int(all_labels.min())}..{int(all_labels.max())} but the model has "
                f"{self.num_classes} classes (0..{self.num_classes - 1}); check the data set's categories"
            )
        return prepared

    def _add(self, losses: dict[str, Tensor], name: str, suffix: str, value: Tensor) -> None:
        losses[name + suffix] = value * self.weight_dict[name]

    def _layer(
        self,
        losses: dict[str, Tensor],
        suffix: str,
        logits: Tensor,
        boxes: Tensor,
        corners: Tensor | None,
        own: _Assignment,
        shared: _Assignment,
        local: _Local,
        teacher: tuple[Tensor, Tensor] | None,
        teacher_is_self: bool = False,
        mask_rows: Tensor | None = None,
    ) -> None:
        """Terms of one output: VFL and the mask terms on ``own``; bbox/giou, and fgl/ddf when it has corners, on
        ``shared``.

        Args:
            logits: (B, Q, C); boxes: (B, Q, 4); corners: (B, Q, 4(N+1)) or None (pre head, encoder).
            own: the output's own matching (VFL); shared: GO union or denoising matching (boxes, local).
            teacher: (corners, logits) of the teacher layer for DDF, or None for no DDF term.
            teacher_is_self: this output IS the teacher: its DDF is 0 (the original's ``torch.equal`` case).
            mask_rows: (M', h, w) mask logits of ``own``'s mask pairs (:func:`_gather_mask_rows`), or None for no
                mask terms; ``own`` then carries the target masks.
        """
        w = self.weight_dict
        if mask_rows is not None and own.masks is not None and own.mask_pairs is not None:
            bce, dice = cropped_mask_losses(mask_rows, own.masks, own.boxes[own.mask_pairs])
            for name, value in zip(MASK_LOSS_NAMES, (bce, dice), strict=True):
                if name in w:
                    self._add(losses, name, suffix, value)
        if "loss_vfl" in w:
            value = varifocal_loss(logits, boxes, own.batch_idx, own.query_idx, own.labels, own.boxes,
                                   own.num_boxes, self.alpha, self.gamma)
            self._add(losses, "loss_vfl", suffix, value)
        if "loss_mal" in w:
            value = matchability_aware_loss(logits, boxes, own.batch_idx, own.query_idx, own.labels, own.boxes,
                                            own.num_boxes, self.mal_gamma)
            self._add(losses, "loss_mal", suffix, value)
        matched_boxes = boxes[shared.batch_idx, shared.query_idx]
        if "loss_bbox" in w or "loss_giou" in w:
            l1, giou = box_losses(matched_boxes, shared.boxes, shared.num_boxes)
            if "loss_bbox" in w:
                self._add(losses, "loss_bbox", suffix, l1)
            if "loss_giou" in w:
                self._add(losses, "loss_giou", suffix, giou)
        if corners is None:
            return
        iou = matched_iou(matched_boxes, shared.boxes)
        if "loss_fgl" in w:
            value = fine_grained_localization_loss(corners[shared.batch_idx, shared.query_idx], local.fgl, iou,
                                                   shared.num_boxes)
            self._add(losses, "loss_fgl", suffix, value)
        if "loss_ddf" in w and teacher_is_self:
            self._add(losses, "loss_ddf", suffix, corners.sum() * 0)
        elif "loss_ddf" in w and teacher is not None:
            value = decoupled_distillation_loss(corners, teacher[0], teacher[1], shared.batch_idx, shared.query_idx,
                                                iou, local.balance, self.ddf_temperature)
            self._add(losses, "loss_ddf", suffix, value)

    @staticmethod
    def _denoising_assignment(meta: Mapping[str, Any] | None, targets: list[dict], num_dn: int, num_boxes: float,
                              with_masks: bool) -> _Assignment | None:
        """The denoising rows' fixed matching (None without denoising rows)."""
        if meta is None or num_dn == 0:
            return None
        num_groups = int(meta["dn_num_group"])
        matching = denoising_matching(meta["dn_positive_idx"], num_groups, targets)
        return _assign(matching, targets, max(num_boxes * num_groups, 1.0), with_masks=with_masks)

    def _denoising(
        self,
        losses: dict[str, Tensor],
        dn: _Assignment | None,
        logits: Tensor,
        boxes: Tensor,
        corners: Tensor,
        refs: Tensor,
        num_dn: int,
        local: _Local,
        project: Tensor,
        reg_scale: Tensor,
        with_masks: bool,
        mask_rows: Sequence[Tensor | None],
    ) -> None:
        """The ``_dn_{i}`` and ``_dn_pre`` terms on the first ``num_dn`` rows (the original's ``dn_meta`` branch of
        ``DFINECriterion.forward``) with their matching ``dn`` (:meth:`_denoising_assignment`); ``mask_rows``: each
        layer's mask logits of the matched denoising rows (None entries without masks)."""
        num_layers = corners.shape[1]
        if dn is None:
            # Denoising meta without denoising rows (no image has a target): the terms exist, and are 0, so the set
            # of names does not change from batch to batch (the original computes them on empty tensors -> 0).
            zero = logits.sum() * 0
            pre_names = (*CLASSIFICATION_LOSSES, "loss_bbox", "loss_giou")  # the pre head has no corners
            layer_names = _KNOWN if with_masks else tuple(n for n in _KNOWN if n not in MASK_LOSS_NAMES)
            groups = [(f"_dn_{i}", layer_names) for i in range(num_layers)] + [("_dn_pre", pre_names)]
            for suffix, names in groups:
                losses.update({name + suffix: zero for name in names if name in self.weight_dict})
            return
        logits_d, boxes_d = logits[:, :, :num_dn], boxes[:, :, :num_dn]
        corners_d, refs_d = corners[:, :, :num_dn], refs[:, :, :num_dn]
        last = num_layers
        # FGL targets from the denoising rows' own reference; DDF balance stays the normal branch's (original).
        local_dn = _Local(
            fgl=fgl_targets(refs_d[:, last - 1][dn.batch_idx, dn.query_idx], dn.boxes, project, reg_scale),
            balance=local.balance,
        )
        teacher = (corners_d[:, last - 1], logits_d[:, last])
        for i in range(num_layers):
            self._layer(losses, f"_dn_{i}", logits_d[:, i + 1], boxes_d[:, i + 1], corners_d[:, i], dn, dn, local_dn,
                        teacher=teacher, teacher_is_self=(i == num_layers - 1), mask_rows=mask_rows[i])
        self._layer(losses, "_dn_pre", logits_d[:, 0], boxes_d[:, 0], None, dn, dn, local_dn, teacher=None)
