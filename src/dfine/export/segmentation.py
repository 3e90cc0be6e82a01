"""Exported segmentation models (D-FINE-seg): a ``masks`` output beside ``labels``/``boxes``/``scores``, and its
check against PyTorch.

The graph's ``masks`` (B, K, H/4, W/4) float32 are the sigmoid probabilities of the mask of each of the top K
(query, class) pairs, in the order of ``labels``/``boxes``/``scores``, as D-FINE-seg's ONNX export (``masks`` gathered
by the top-k query index; ``dfine_seg/export`` and its ONNX wrapper). Resizing to the image, thresholding and the
crop to each box are left to the runtime (:mod:`dfine.runtime.masks`), which does them as
:func:`dfine.processing.segmentation.post_process_instances` does.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor, nn

from dfine.errors import DFineError
from dfine.ops.boxes import box_cxcywh_to_xyxy
from dfine.processing.detections import top_k_pairs

__all__ = ["MASK_OUTPUT", "DeployWithMasks", "check_masks"]

MASK_OUTPUT = "masks"

# largest difference of a mask probability between the graph and PyTorch (fp32; an fp16 body moves them more)
FP32_MASK_TOLERANCE = 1e-3
FP16_MASK_TOLERANCE = 5e-2


class DeployWithMasks(nn.Module):
    """A deployed segmentation model (:class:`~dfine.model.deploy.masks.DeployedSegmentation`) and its
    post-processing: ``(images, orig_target_sizes) -> labels, boxes, scores, masks``."""

    def __init__(self, model: nn.Module, top_k: int, input_transform: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.top_k = top_k
        self.input_transform = input_transform

    def forward(self, images: Tensor, orig_target_sizes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if self.input_transform is not None:
            images = self.input_transform(images)
        logits, boxes, mask_logits = self.model(images)
        scores, labels, queries = top_k_pairs(logits.float(), self.top_k)
        corners = box_cxcywh_to_xyxy(boxes.float()).gather(1, queries[..., None].expand(-1, -1, 4))
        corners = corners * orig_target_sizes.float().repeat(1, 2)[:, None, :]
        height, width = mask_logits.shape[-2:]
        index = queries[..., None, None].expand(-1, -1, height, width)
        masks = mask_logits.float().gather(1, index).sigmoid()
        return labels, corners, scores, masks


def check_masks(logits: np.ndarray, boxes_cxcywh: np.ndarray, mask_logits: np.ndarray, labels: np.ndarray,
                boxes: np.ndarray, scores: np.ndarray, masks: np.ndarray, half: bool, backend: str,
                top: int = 20, score_tol: float = 1e-3, box_tol: float = 1e-3) -> float:
    """The largest difference between the graph's mask probabilities and PyTorch's, over the graph's ``top``
    instances of each image that have a PyTorch counterpart (same label, box within ``box_tol`` of the image size
    and score within ``score_tol``; the boxes' own check covers the others).

    Args:
        logits, boxes_cxcywh, mask_logits: PyTorch's raw outputs (B, Q, C), (B, Q, 4), (B, Q, h, w).
        labels, boxes, scores, masks: the graph's outputs, boxes normalised to [0, 1] (B, K, 4), masks (B, K, h, w).
        half: the graph has an fp16 body (a looser tolerance).
        backend: named in the error.

    Raises:
        DFineError: a mask differs beyond the tolerance, or no instance could be compared.
    """
    def sigmoid(x: np.ndarray) -> np.ndarray:
        return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))

    reference_scores = sigmoid(logits)  # (B, Q, C)
    centre = np.asarray(boxes_cxcywh, dtype=np.float64)
    reference_boxes = np.concatenate([centre[..., :2] - centre[..., 2:] / 2, centre[..., :2] + centre[..., 2:] / 2],
                                     axis=-1)
    worst, compared = 0.0, 0
    for image in range(labels.shape[0]):
        for rank in range(min(top, labels.shape[1])):
            box_diff = np.abs(reference_boxes[image] - boxes[image, rank]).max(axis=-1)  # (Q,)
            score_diff = np.abs(reference_scores[image, :, int(labels[image, rank])] - scores[image, rank])
            same = np.flatnonzero((box_diff <= box_tol) & (score_diff <= score_tol))
            if len(same) == 0:
                continue
            query = same[np.argmin(box_diff[same])]
            difference = np.abs(sigmoid(mask_logits[image, query]) - masks[image, rank]).max()
            worst = max(worst, float(difference))
            compared += 1
    tolerance = FP16_MASK_TOLERANCE if half else FP32_MASK_TOLERANCE
    if compared == 0:
        raise DFineError(f"{backend} check failed: no instance of the exported model matches PyTorch's, so its "
                         "masks could not be compared")
    if worst > tolerance:
        raise DFineError(f"{backend} check failed: mask probabilities differ from PyTorch's by up to {worst:.3g} "
                         f"(tolerance {tolerance:g}) over {compared} instances")
    return worst
