"""Box uncertainty as optional outputs of an exported graph (``dfine export --uncertainty``), and their check
against PyTorch.

The graph gains two outputs after ``labels``, ``boxes`` and ``scores``, aligned with them (the same top K (query,
class) pairs, best first):

* ``edge_uncertainty`` float32 (B, K, 4): the standard deviation of each edge (left, top, right, bottom) under the
  final decoder layer's FDR distributions, in pixels of ``orig_target_sizes`` (:func:`dfine.ops.uncertainty.
  edge_uncertainty`, computed by the deploy head after ``set_uncertainty()``);
* ``uncertainty`` float32 (B, K): one number per box, the mean edge σ over the box's side along its axis
  (:func:`dfine.ops.uncertainty.box_uncertainty`).

Both are computed exactly as :meth:`dfine.DFineImageProcessor.post_process_object_detection` does with
``return_uncertainty=True``: the edges' σ ride along as four more box columns through the shared top-k
(:func:`dfine.processing.detections.top_k_detections`), are scaled to pixels with the boxes, and are split off by
:func:`dfine.processing.detections.split_uncertainty`. A segmentation model's export has no uncertainty outputs
(its deploy form returns masks instead).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from dfine.errors import DFineError
from dfine.export.postprocess import DeployWithPostprocess
from dfine.ops.boxes import box_cxcywh_to_xyxy
from dfine.processing.detections import split_uncertainty, top_k_detections

__all__ = ["UNCERTAINTY_OUTPUTS", "DeployWithUncertainty", "check_uncertainty"]

#: the graph's uncertainty outputs, in the order they follow labels, boxes and scores
UNCERTAINTY_OUTPUTS = ("edge_uncertainty", "uncertainty")


class DeployWithUncertainty(DeployWithPostprocess):
    """A deployed model whose head gives edge spreads (:meth:`~dfine.model.deploy.deployed.DeployedDFine.
    set_uncertainty`) and its post-processing: ``(images, orig_target_sizes) -> labels, boxes, scores,
    edge_uncertainty, uncertainty``."""

    def forward(self, images: Tensor, orig_target_sizes: Tensor  # type: ignore[override]
                ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        if self.input_transform is not None:
            images = self.input_transform(images)
        logits, boxes, edges = self.model(images)
        # as post_process_object_detection(return_uncertainty=True): σ as box columns 4..7, selected and scaled alike
        columns = torch.cat([box_cxcywh_to_xyxy(boxes.float()), edges.float()], dim=-1)
        scores, labels, columns = top_k_detections(logits.float(), columns, self.top_k)
        columns = columns * orig_target_sizes.float().repeat(1, 4)[:, None, :]  # (w, h, w, h) twice
        split = split_uncertainty({"boxes": columns})
        return labels, split["boxes"], scores, split["edge_uncertainty"], split["uncertainty"]


def check_uncertainty(reference: Sequence[dict[str, Tensor]], sizes_wh: np.ndarray, labels: np.ndarray,
                      boxes: np.ndarray, scores: np.ndarray, edges: np.ndarray, uncertainty: np.ndarray,
                      backend: str, score_tol: float, box_tol: float, top: int = 100) -> float:
    """The largest difference (in fractions of the image size) between the graph's edge σ and PyTorch's, over the
    graph's ``top`` detections of each image that have a PyTorch counterpart (same label, score within
    ``score_tol``, box within ``box_tol`` of the image size; the boxes' own check covers the others).

    Each box's ``uncertainty`` (the mean over edges of σ / side) must agree too, within what the differences of its
    own σ and sides from PyTorch's move it: to first order ``mean((Δσ + (σ / side) · Δside) / side)``, doubled, plus
    a relative 1e-4 for rounding. So a graph computing it from other edges or boxes, or scaling it, fails even where
    σ and the boxes agree, while an fp16 body, whose edges and boxes move more, does not fail on this account.

    Args:
        reference: PyTorch's post-processed detections per image, with ``return_uncertainty=True``, in pixels.
        sizes_wh: (B, 2) the original images' (width, height).
        labels, boxes, scores, edges, uncertainty: the graph's outputs (B, K), (B, K, 4), (B, K), (B, K, 4), (B, K).
        backend: named in the error.

    Raises:
        DFineError: a σ or an uncertainty differs beyond the tolerance, a value is negative or not finite, or no
            detection could be compared.
    """
    if not (np.isfinite(edges).all() and np.isfinite(uncertainty).all()):
        raise DFineError(f"{backend} check failed: the exported model gives non-finite box uncertainties")
    if (edges < 0).any() or (uncertainty < 0).any():
        raise DFineError(f"{backend} check failed: the exported model gives negative box uncertainties")
    worst_edge, worst_excess, compared = 0.0, 0.0, 0
    for image, result in enumerate(reference):
        width, height = (float(v) for v in sizes_wh[image])
        scale = np.array([width, height, width, height])
        ref = {key: result[key].detach().cpu().double().numpy() for key in
               ("labels", "scores", "boxes", "edge_uncertainty", "uncertainty")}
        ref_boxes, ref_edges = ref["boxes"] / scale, ref["edge_uncertainty"] / scale
        for rank in range(min(top, labels.shape[1])):
            box_diff = np.abs(ref_boxes - boxes[image, rank] / scale).max(axis=-1)
            same = np.flatnonzero((ref["labels"] == labels[image, rank]) & (box_diff <= box_tol)
                                  & (np.abs(ref["scores"] - scores[image, rank]) <= score_tol))
            if len(same) == 0:
                continue
            match = same[np.argmin(box_diff[same])]
            edge_diff = np.abs(ref_edges[match] - edges[image, rank] / scale)  # (4,) left, top, right, bottom
            worst_edge = max(worst_edge, float(edge_diff.max()))
            graph_box = boxes[image, rank] / scale
            sides = np.abs(ref_boxes[match, 2:] - ref_boxes[match, :2])[[0, 1, 0, 1]].clip(min=1e-6)
            side_diff = np.abs(sides - np.abs(graph_box[2:] - graph_box[:2])[[0, 1, 0, 1]])
            expected = float(ref["uncertainty"][match])
            moved = float(((edge_diff + ref_edges[match] / sides * side_diff) / sides).mean())
            allowed = 2 * moved + 1e-4 * expected + 1e-7
            excess = abs(expected - float(uncertainty[image, rank])) / allowed
            worst_excess = max(worst_excess, excess)
            compared += 1
    if compared == 0:
        raise DFineError(f"{backend} check failed: no detection of the exported model matches PyTorch's, so its box "
                         "uncertainties could not be compared")
    if worst_edge > box_tol or worst_excess > 1:
        raise DFineError(f"{backend} check failed: box uncertainties differ from PyTorch's (edge σ by up to "
                         f"{worst_edge:.3g} of the image size, tolerance {box_tol:g}; per-box uncertainty by up to "
                         f"{worst_excess:.3g}× what those differences allow) over {compared} detections")
    return worst_edge
