"""D-FINE training loss: Hungarian matcher, VFL / L1 / GIoU / FGL / DDF (and D-FINE-seg's mask terms), and the
criterion with GO-LSD wiring.

The wiring is the original repository's (``src/zoo/dfine/dfine_criterion.py: DFINECriterion``), not Hugging Face's; see
:mod:`dfine.loss.criterion` for the list of terms and the differences.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dfine.loss.criterion import LOSS_NAMES, DFineCriterion
from dfine.loss.functional import (
    FGLTargets,
    box_losses,
    ddf_balance,
    decoupled_distillation_loss,
    fgl_targets,
    fine_grained_localization_loss,
    matchability_aware_loss,
    varifocal_loss,
)
from dfine.loss.masks import MASK_COST_WEIGHTS, MASK_LOSS_NAMES, MASK_LOSS_WEIGHTS
from dfine.loss.matcher import HungarianMatcher, Matching, denoising_matching, union_matching

if TYPE_CHECKING:
    from dfine.config import DFineConfig


def build_matcher(config: DFineConfig) -> HungarianMatcher:
    """The Hungarian matcher a config describes: its ``matcher_*`` costs, α and γ; with the mask head
    (``use_mask_head``), D-FINE-seg's mask costs too (:data:`dfine.loss.masks.MASK_COST_WEIGHTS`)."""
    mask_costs = MASK_COST_WEIGHTS if config.use_mask_head else {"focal": 0.0, "dice": 0.0}
    return HungarianMatcher(class_cost=config.matcher_class_cost, bbox_cost=config.matcher_bbox_cost,
                            giou_cost=config.matcher_giou_cost, alpha=config.matcher_alpha, gamma=config.matcher_gamma,
                            mask_cost=mask_costs["focal"], dice_cost=mask_costs["dice"])


def build_criterion(config: DFineConfig) -> DFineCriterion:
    """The criterion a config describes: its matcher, ``weight_loss_*`` weights, VFL α / γ (``focal_loss_*``) and N
    (``max_num_bins``). The config's defaults, named as in transformers, are the one copy of the recipe's numbers.
    A config with :attr:`~dfine.config.DFineConfig.mal_gamma` set (DEIM's recipe) trains with the
    Matchability-Aware Loss in place of VFL, at VFL's weight. A config with the mask head adds D-FINE-seg's mask
    terms (:data:`dfine.loss.masks.MASK_LOSS_WEIGHTS`)."""
    classification = "loss_vfl" if config.mal_gamma is None else "loss_mal"
    weights = {classification: config.weight_loss_vfl, "loss_bbox": config.weight_loss_bbox,
               "loss_giou": config.weight_loss_giou, "loss_fgl": config.weight_loss_fgl,
               "loss_ddf": config.weight_loss_ddf}
    if config.use_mask_head:
        weights.update(MASK_LOSS_WEIGHTS)
    return DFineCriterion(config.num_labels, matcher=build_matcher(config), weight_dict=weights,
                          alpha=config.focal_loss_alpha, gamma=config.focal_loss_gamma, reg_max=config.max_num_bins,
                          mal_gamma=config.mal_gamma if config.mal_gamma is not None else 1.5)


__all__ = [
    "LOSS_NAMES",
    "MASK_COST_WEIGHTS",
    "MASK_LOSS_NAMES",
    "MASK_LOSS_WEIGHTS",
    "DFineCriterion",
    "FGLTargets",
    "HungarianMatcher",
    "Matching",
    "box_losses",
    "build_criterion",
    "build_matcher",
    "ddf_balance",
    "decoupled_distillation_loss",
    "denoising_matching",
    "fgl_targets",
    "fine_grained_localization_loss",
    "matchability_aware_loss",
    "union_matching",
    "varifocal_loss",
]
