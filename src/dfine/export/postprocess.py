"""Post-processing inside the exported graph: raw outputs -> ``labels``, ``boxes`` (pixels, xyxy), ``scores``.

The same computation as :meth:`dfine.DFineImageProcessor.post_process_object_detection` before thresholding
(and as the original's ``src/zoo/dfine/postprocessor.py: DFINEPostProcessor``), through the same
:func:`dfine.processing.detections.top_k_detections`: sigmoid, top-k over queries × classes with k = the number of
queries, label = index mod C, boxes gathered by query and scaled to the original image size. No NMS, no clamping.

**Size order.** The exported graph takes ``orig_target_sizes`` as int64 ``(width, height)`` per image — the order
of the original D-FINE deployment tools (``export_onnx.py``, its ONNX Runtime / TensorRT / OpenVINO / C++ examples),
so that an exported dfine model is a drop-in replacement there. This is the *opposite* of the Python API
(``post_process_object_detection(target_sizes=...)`` takes Hugging Face's ``(height, width)``). The order is also
written into the ONNX metadata (``orig_target_sizes`` = ``"width,height"``), and :mod:`dfine.runtime.onnx` follows it.
"""

from __future__ import annotations

from torch import Tensor, nn

from dfine.ops.boxes import box_cxcywh_to_xyxy
from dfine.processing.detections import top_k_detections

__all__ = ["TARGET_SIZE_ORDER", "DeployWithPostprocess", "postprocess"]

TARGET_SIZE_ORDER = "width,height"


def postprocess(logits: Tensor, boxes_cxcywh: Tensor, orig_target_sizes: Tensor, top_k: int) -> tuple[Tensor, ...]:
    """``(labels (B, k) int64, boxes (B, k, 4) float, scores (B, k) float)`` from raw outputs.

    Args:
        logits: (B, Q, C) class logits.
        boxes_cxcywh: (B, Q, 4) normalised centre-form boxes.
        orig_target_sizes: (B, 2) ``(width, height)`` of the original images (any numeric dtype).
        top_k: detections per image (at most Q · C).
    """
    corners = box_cxcywh_to_xyxy(boxes_cxcywh.float())
    scores, labels, boxes = top_k_detections(logits.float(), corners, top_k)
    sizes = orig_target_sizes.float().repeat(1, 2)  # (w, h, w, h)
    boxes = boxes * sizes.unsqueeze(1)
    return labels, boxes, scores


class DeployWithPostprocess(nn.Module):
    """A deployed model and its post-processing as one module: ``(images, orig_target_sizes) -> labels, boxes,
    scores``, the graph that ONNX and TensorRT export."""

    def __init__(self, model: nn.Module, top_k: int, input_transform: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.top_k = top_k
        # the model's own normalisation, when it has one (dfine.export.preprocess)
        self.input_transform = input_transform

    def forward(self, images: Tensor, orig_target_sizes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.input_transform is not None:
            images = self.input_transform(images)
        logits, boxes = self.model(images)
        labels, boxes, scores = postprocess(logits, boxes, orig_target_sizes, self.top_k)
        return labels, boxes, scores
