"""Pure tensor functions shared by the model, the loss and export (no modules, no state)."""

from dfine.ops.boxes import (
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    elementwise_box_iou,
    generalized_box_iou,
    inverse_sigmoid,
)
from dfine.ops.fdr import bbox2distance, distance2bbox, distribution_integral, translate_gt, weighting_function

__all__ = [
    "bbox2distance",
    "box_cxcywh_to_xyxy",
    "box_iou",
    "box_xyxy_to_cxcywh",
    "distance2bbox",
    "distribution_integral",
    "elementwise_box_iou",
    "generalized_box_iou",
    "inverse_sigmoid",
    "translate_gt",
    "weighting_function",
]
