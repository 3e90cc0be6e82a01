"""D-FINE training loss: Hungarian matcher, VFL / L1 / GIoU / FGL / DDF, and the criterion with GO-LSD wiring.

The wiring is the original repository's (SPEC Part A §4.2, Part B §4), not Hugging Face's; see
:mod:`dfine.loss.criterion` for the list of terms and the differences.
"""

from dfine.loss.criterion import DEFAULT_WEIGHT_DICT, DFineCriterion
from dfine.loss.functional import (
    FGLTargets,
    box_losses,
    ddf_balance,
    decoupled_distillation_loss,
    fgl_targets,
    fine_grained_localization_loss,
    varifocal_loss,
)
from dfine.loss.matcher import HungarianMatcher, Matching, denoising_matching, union_matching


def build_criterion(config) -> DFineCriterion:  # noqa: ANN001 (DFineConfig; imported lazily to avoid a cycle)
    """The criterion a :class:`~dfine.config.DFineConfig` describes (matcher costs, loss weights, VFL α/γ, N)."""
    matcher = HungarianMatcher(class_cost=config.matcher_class_cost, bbox_cost=config.matcher_bbox_cost,
                               giou_cost=config.matcher_giou_cost, alpha=config.matcher_alpha,
                               gamma=config.matcher_gamma)
    weights = {"loss_vfl": config.weight_loss_vfl, "loss_bbox": config.weight_loss_bbox,
               "loss_giou": config.weight_loss_giou, "loss_fgl": config.weight_loss_fgl,
               "loss_ddf": config.weight_loss_ddf}
    return DFineCriterion(config.num_labels, matcher=matcher, weight_dict=weights, alpha=config.focal_loss_alpha,
                          gamma=config.focal_loss_gamma, reg_max=config.max_num_bins)

__all__ = [
    "DEFAULT_WEIGHT_DICT",
    "DFineCriterion",
    "FGLTargets",
    "HungarianMatcher",
    "Matching",
    "box_losses",
    "build_criterion",
    "ddf_balance",
    "decoupled_distillation_loss",
    "denoising_matching",
    "fgl_targets",
    "fine_grained_localization_loss",
    "union_matching",
    "varifocal_loss",
]
