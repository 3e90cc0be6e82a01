"""``DFineForInstanceSegmentation``: D-FINE with the mask branch of D-FINE-seg (ArgoHA/D-FINE-seg 0.6.2).

The detection part is :class:`~dfine.model.detection.DFineForObjectDetection` unchanged (same forward, loss and
loading); the network adds the pixel decoder and the per-query mask embedding of :mod:`dfine.model.mask_head` when
its config has ``use_mask_head``, which this class always sets.
"""

from __future__ import annotations

from torch import nn

from dfine.model.detection import DFineForObjectDetection
from dfine.model.outputs import DFineInstanceSegmentationOutput


class DFineForInstanceSegmentation(DFineForObjectDetection):
    """D-FINE-seg: the detection outputs of :class:`DFineForObjectDetection` plus ``pred_masks`` (B, Q, H/4, W/4)
    mask logits, one per query.

    ``from_pretrained`` reads D-FINE-seg's ``.pt`` files (a bare state dict, or under ``"model"`` or
    ``"ema"/"module"``) with the size inferred from the tensors, and this class's own ``save_pretrained`` folders. A
    detection checkpoint starts the model with a freshly initialised mask branch (said in the log). Post-process with
    :meth:`dfine.DFineImageProcessor.post_process_instance_segmentation`.
    """

    output_type = DFineInstanceSegmentationOutput
    has_mask_head = True

    def deploy(self, image_size: int | tuple[int, int] | None = None, decoder_layers: int | None = None
               ) -> nn.Module:
        """An inference-only copy in deploy form whose forward gives ``(logits, pred_boxes, pred_masks)`` as a
        named tuple (:func:`dfine.model.deploy.masks.deploy_segmentation`); this model is not changed.
        ``optimize_for_inference`` (inherited) builds on it."""
        from dfine.model.deploy.masks import deploy_segmentation

        return deploy_segmentation(self, image_size, decoder_layers)


__all__ = ["DFineForInstanceSegmentation"]
