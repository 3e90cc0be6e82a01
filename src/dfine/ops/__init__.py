"""Pure maths shared by the model, the loss, export and the torch-free parts (no modules, no state).

:mod:`~dfine.ops.boxes` (box formats and overlaps of tensors), :mod:`~dfine.ops.fdr` (Fine-grained Distribution
Refinement), :mod:`~dfine.ops.deform_attn` (multi-scale deformable attention) and :mod:`~dfine.ops.numpy_boxes` (box
overlaps of NumPy arrays). Names are imported lazily (PEP 562), so that importing :mod:`~dfine.ops.numpy_boxes`
does not import PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dfine.utils.lazy import lazy_exports

_EXPORTS = {
    "box_cxcywh_to_xyxy": "dfine.ops.boxes",
    "box_iou": "dfine.ops.boxes",
    "box_xyxy_to_cxcywh": "dfine.ops.boxes",
    "elementwise_box_iou": "dfine.ops.boxes",
    "elementwise_generalized_box_iou": "dfine.ops.boxes",
    "generalized_box_iou": "dfine.ops.boxes",
    "inverse_sigmoid": "dfine.ops.boxes",
    "bbox2distance": "dfine.ops.fdr",
    "distance2bbox": "dfine.ops.fdr",
    "distribution_integral": "dfine.ops.fdr",
    "translate_gt": "dfine.ops.fdr",
    "weighting_function": "dfine.ops.fdr",
}

__all__ = [
    "bbox2distance",
    "box_cxcywh_to_xyxy",
    "box_iou",
    "box_xyxy_to_cxcywh",
    "distance2bbox",
    "distribution_integral",
    "elementwise_box_iou",
    "elementwise_generalized_box_iou",
    "generalized_box_iou",
    "inverse_sigmoid",
    "translate_gt",
    "weighting_function",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)


if TYPE_CHECKING:
    from dfine.ops.boxes import (
        box_cxcywh_to_xyxy,
        box_iou,
        box_xyxy_to_cxcywh,
        elementwise_box_iou,
        elementwise_generalized_box_iou,
        generalized_box_iou,
        inverse_sigmoid,
    )
    from dfine.ops.fdr import bbox2distance, distance2bbox, distribution_integral, translate_gt, weighting_function
