"""The deploy form of D-FINE-seg: the deployed detector plus the mask branch, for export.

The same computation as :class:`~dfine.model.segmentation.DFineForInstanceSegmentation` in eval mode (D-FINE-seg's
``DFINETransformer.forward`` in ``dfine_seg/model/arch/dfine_decoder.py``): the pixel decoder reads the encoder's
maps before the decoder's input projection (plus, for N, the backbone's stride-8 map), and each query's mask is its
mask embedding (of the evaluated layer's query state) dotted with the pixel features. The detections are those of
:class:`~dfine.model.deploy.deployed.DeployedDFine`; the forward keeps its properties (no host synchronisation, no
tensor built from Python data), so the graph exports as the detector's does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor, nn

from dfine.config.image_size import image_size_hw
from dfine.model.deploy.deployed import DeployBody, DeployedDFine
from dfine.model.deploy.head import DeployHead, DetectionOutput, DetectionWithUncertainty
from dfine.model.depth import set_decoder_layers
from dfine.model.mask_head import mask_logits
from dfine.model.network import DFineNetwork

if TYPE_CHECKING:
    from dfine.model.detection import DFineForObjectDetection

__all__ = ["DeployedSegmentation", "SegmentationOutput", "SegmentationWithUncertainty", "deploy_segmentation"]


class SegmentationOutput(NamedTuple):
    """Raw instances of a deployed segmentation model."""

    logits: Tensor  # (B, Q, C) class logits, sigmoid gives scores
    pred_boxes: Tensor  # (B, Q, 4) normalised (cx, cy, w, h)
    pred_masks: Tensor  # (B, Q, H/4, W/4) mask logits, sigmoid gives probabilities


class SegmentationWithUncertainty(NamedTuple):
    """:class:`SegmentationOutput` with the spread of each box edge (a model with ``set_uncertainty()``)."""

    logits: Tensor  # (B, Q, C)
    pred_boxes: Tensor  # (B, Q, 4)
    pred_masks: Tensor  # (B, Q, H/4, W/4)
    edge_uncertainty: Tensor  # (B, Q, 4) σ of left, top, right, bottom, normalised (as DetectionWithUncertainty)


class _MaskBody(DeployBody):
    """The deployed body that also hands over what the mask branch reads: the encoder's maps (before the decoder's
    input projection) and, for N, the backbone's stride-8 map the encoder does not see."""

    def __init__(self, model: DFineNetwork, image_size: tuple[int, int]) -> None:
        super().__init__(model, image_size)
        self.low_level = model.config.mask_low_level_stage is not None

    def forward(self, pixel_values: Tensor) -> tuple[list[Tensor], list[Tensor]]:  # type: ignore[override]
        features = self.backbone(pixel_values)
        mask_inputs: list[Tensor] = []
        if self.low_level:
            mask_inputs.append(features[0])
            features = features[1:]
        maps = self.encoder([proj(f) for proj, f in zip(self.encoder_input_proj, features)])
        sources = [proj(m) for proj, m in zip(self.decoder_input_proj, maps)]
        for level in range(len(sources), self.num_feature_levels):
            sources.append(self.decoder_input_proj[level](maps[-1] if level == len(maps) else sources[-1]))
        return sources, [*mask_inputs, *maps]


class _QueryStates(NamedTuple):
    detections: DetectionOutput | DetectionWithUncertainty
    hidden: Tensor  # (B, Q, d) the evaluated layer's query states


class _MaskHead(DeployHead):
    """The deployed head that also returns the evaluated layer's query states (what the mask embedding reads)."""

    def _decode(self, hidden: Tensor, reference: Tensor, values: list[Tensor],  # type: ignore[override]
                scales: list[Tensor]) -> _QueryStates:
        states, corners, boxes, fixed_reference = self._run_layers(hidden, reference, values, scales)
        return _QueryStates(self._detections(states, corners, boxes, fixed_reference), states)


class DeployedSegmentation(DeployedDFine):
    """Inference-only D-FINE-seg: ``forward(pixel_values)`` -> :class:`SegmentationOutput`, or
    :class:`SegmentationWithUncertainty` after ``set_uncertainty()``.

    The pixel decoder (convolutions at an eighth and a quarter of the input size: most of the mask branch's FLOPs)
    runs in the body's precision, the mask embedding and the mask products in the head's (:meth:`set_precision`).
    """

    def __init__(self, model: DFineForObjectDetection, image_size: tuple[int, int]) -> None:
        nn.Module.__init__(self)
        self.config = model.config
        self.image_size = image_size
        network = model.model
        self.body = _MaskBody(network, image_size)
        self.head = _MaskHead(network, self._spatial_shapes(image_size))
        self.mask_decoder = network.mask_decoder
        self.mask_head = network.mask_head
        self.channels_last = False

    def set_precision(self, dtype: torch.dtype, head_dtype: torch.dtype | None = torch.float32
                      ) -> DeployedSegmentation:
        super().set_precision(dtype, head_dtype)
        # measured on D-FINE-S at 640 on a CPU with AVX-512 BF16: the pixel decoder in bf16 instead of float32 took
        # the mask branch from about 225 to 140 ms (benchmarks/segmentation_latency.py --bf16)
        self.mask_decoder.to(self.body_dtype)
        self.mask_head.to(self.head_dtype)
        return self

    def forward(self, pixel_values: Tensor  # type: ignore[override]
                ) -> SegmentationOutput | SegmentationWithUncertainty:
        pixel_values = pixel_values.to(self.body_dtype)
        if self.channels_last:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        sources, mask_inputs = self.body(pixel_values)
        detections, hidden = self.head(sources)
        pixels = self.mask_decoder([m.contiguous() for m in mask_inputs])  # the body's maps, in its dtype
        dtype = self.head_dtype
        masks = mask_logits(self.mask_head, hidden.to(dtype)[None], pixels.to(dtype))[:, 0]
        if isinstance(detections, DetectionWithUncertainty):
            return SegmentationWithUncertainty(detections.logits, detections.pred_boxes, masks,
                                               detections.edge_uncertainty)
        return SegmentationOutput(detections.logits, detections.pred_boxes, masks)


@torch.no_grad()
def deploy_segmentation(model: DFineForObjectDetection, image_size: int | Sequence[int] | None = None,
                        decoder_layers: int | None = None) -> DeployedSegmentation:
    """An inference-only copy of a segmentation model (one with ``config.use_mask_head``) in deploy form; see
    :func:`dfine.model.deploy.deployed.deploy` for ``image_size`` and ``decoder_layers`` (the masks are then those
    of the last layer kept, as the boxes). ``model`` is not changed."""
    import copy

    network = getattr(model, "model", None)
    if not isinstance(network, DFineNetwork) or not model.config.use_mask_head:
        raise TypeError(f"deploy_segmentation() needs a DFineForInstanceSegmentation, got {type(model).__name__}")
    if image_size is None:
        config = model.config
        image_size = config.anchor_image_size or config.eval_size or config.training_image_size or 640
    source = copy.deepcopy(model).eval()
    if decoder_layers is not None:
        set_decoder_layers(source, decoder_layers)
    return DeployedSegmentation(source, image_size_hw(image_size)).eval()
