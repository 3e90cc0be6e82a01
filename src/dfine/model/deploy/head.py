"""Deploy form of the detection head: two-stage query selection and the FDR decoder, inference path only.

Numerically the same computation as :class:`dfine.model.network.DFineNetwork` in eval mode (the original's
``src/zoo/dfine/dfine_decoder.py: DFINETransformer.forward``),
restructured for speed and for capture (CUDA graphs, ``torch.compile``, ONNX):

* anchors, the valid mask, the FDR weighting W(n) and the deformable-attention point scales are buffers computed
  once for the export size, so the forward creates no tensor from Python data and never syncs with the host;
* the per-head value maps of the deformable attention are laid out once per forward instead of once per layer;
* q/k projections of the decoder self-attention and the offset/weight projections of the cross-attention are
  merged into single matrix products;
* only the class head and LQE of the evaluated layer exist (the others are never used at inference), layers after
  ``eval_idx`` are dropped (the original stops there too), and denoising is gone.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfine.model.anchors import generate_anchors
from dfine.model.decoder import DecoderLayer
from dfine.model.network import DFineNetwork
from dfine.ops.boxes import inverse_sigmoid
from dfine.ops.deform_attn import grid_sample_layout, sample_levels
from dfine.ops.fdr import distance2bbox, weighting_function
from dfine.ops.uncertainty import edge_uncertainty

__all__ = ["DeployHead", "DetectionOutput", "DetectionWithUncertainty"]

# Invalid anchors get this logit instead of the dtype's maximum: finite in fp16 and bf16, and any value above ~20
# gives the same sigmoid (1.0) and the same clamped inverse sigmoid, so the outputs do not change.
_INVALID_ANCHOR_LOGIT = 65504.0


class DetectionOutput(NamedTuple):
    """Raw detections of a deployed model (the same fields as :class:`~dfine.model.DFineObjectDetectionOutput`)."""

    logits: Tensor  # (B, Q, C) class logits, sigmoid gives scores
    pred_boxes: Tensor  # (B, Q, 4) normalised (cx, cy, w, h)


class DetectionWithUncertainty(NamedTuple):
    """:class:`DetectionOutput` with the spread of each box edge, what a head with ``output_uncertainty`` returns."""

    logits: Tensor  # (B, Q, C)
    pred_boxes: Tensor  # (B, Q, 4) normalised (cx, cy, w, h)
    edge_uncertainty: Tensor  # (B, Q, 4) σ of left, top, right, bottom (dfine.ops.uncertainty), normalised


def _merged_linear(*layers: nn.Linear) -> nn.Linear:
    """One Linear whose output is the concatenation of the given layers' outputs (same input)."""
    first = layers[0]
    merged = nn.Linear(first.in_features, sum(layer.out_features for layer in layers),
                       device=first.weight.device, dtype=first.weight.dtype)
    with torch.no_grad():
        merged.weight.copy_(torch.cat([layer.weight for layer in layers]))
        merged.bias.copy_(torch.cat([layer.bias for layer in layers]))
    return merged


class DeployDecoderLayer(nn.Module):
    """One decoder layer (self-attention, deformable cross-attention, gate, FFN) with merged projections."""

    def __init__(self, layer: DecoderLayer) -> None:
        super().__init__()
        attn, cross = layer.self_attn, layer.encoder_attn
        self.num_heads = attn.num_heads
        self.qk_proj = _merged_linear(attn.q_proj, attn.k_proj)
        self.v_proj = attn.v_proj
        self.o_proj = attn.o_proj
        self.self_attn_layer_norm = layer.self_attn_layer_norm
        self.cross_heads = cross.num_heads
        self.num_points_list = list(cross.num_points_list)
        self.total_points = sum(self.num_points_list)
        self.method = cross.method
        self.offsets_and_weights = _merged_linear(cross.sampling_offsets, cross.attention_weights)
        # offset -> location factor per point: (1 / n_l) · decoder_offset_scale
        self.register_buffer("point_scale", (cross.num_points_scale * cross.offset_scale)[:, None].clone())
        self.gateway = layer.gateway
        self.mlp = layer.mlp
        self.final_layer_norm = layer.final_layer_norm

    def _self_attention(self, x: Tensor, pos: Tensor) -> Tensor:
        batch, length, dim = x.shape
        head_dim = dim // self.num_heads
        q, k = self.qk_proj(x + pos).view(batch, length, 2, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        v = self.v_proj(x).view(batch, length, self.num_heads, head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, dim))

    def _cross_attention(self, query: Tensor, reference: Tensor, values: list[Tensor],
                         value_scales: list[Tensor]) -> Tensor:
        batch, num_queries, dim = query.shape
        heads, points = self.cross_heads, self.total_points
        projected = self.offsets_and_weights(query)
        offsets = projected[..., : heads * points * 2].view(batch, num_queries, heads, points, 2)
        weights = projected[..., heads * points * 2:].view(batch, num_queries, heads, points).softmax(dim=-1)
        centre = reference[:, :, None, None, :2]
        size = reference[:, :, None, None, 2:]
        locations = centre + offsets * self.point_scale * size  # (B, Q, M, P, 2) in [0, 1]
        # (B·M, Q, P, 2) per level; points are ordered level-major
        locations = locations.permute(0, 2, 1, 3, 4).flatten(0, 1).split(self.num_points_list, dim=2)
        weights = weights.permute(0, 2, 1, 3).reshape(batch * heads, 1, num_queries, points)
        out = sample_levels(values, locations, weights, self.method, value_scales, per_level_sum=True)  # (B·M, D, Q)
        return out.view(batch, dim, num_queries).transpose(1, 2)

    def forward(self, x: Tensor, pos: Tensor, reference: Tensor, values: list[Tensor],
                value_scales: list[Tensor]) -> Tensor:
        x = self.self_attn_layer_norm(x + self._self_attention(x, pos))
        x = self.gateway(x, self._cross_attention(x + pos, reference, values, value_scales))
        # the clamp keeps an fp16 FFN overflow from turning into inf (as in the training form)
        return self.final_layer_norm((x + self.mlp(x)).clamp(-65504, 65504))


class DeployHead(nn.Module):
    """Query selection + decoder: flattened multi-level maps -> :class:`DetectionOutput`.

    Args:
        model: the training-form network (its modules are reused, not copied).
        spatial_shapes: ``((H_l, W_l), ...)`` of the levels at the export size; buffers are precomputed for them
            (other sizes still work in eager mode, computing the buffers on the fly).

    Setting :attr:`output_uncertainty` makes the forward return :class:`DetectionWithUncertainty` (the same
    detections plus ``edge_uncertainty``, computed from the final corner logits with the ``project`` buffer, so
    still without host synchronisation); set it before ``torch.compile`` or a CUDA-graph capture.
    """

    output_uncertainty: bool = False

    def __init__(self, model: DFineNetwork, spatial_shapes: tuple[tuple[int, int], ...]) -> None:
        super().__init__()
        config = model.config
        decoder = model.decoder
        self.num_queries = config.num_queries
        self.num_labels = config.num_labels
        self.eval_idx = decoder.eval_idx
        self.enc_output = model.enc_output
        self.enc_score_head = model.enc_score_head
        self.enc_bbox_head = model.enc_bbox_head
        last = decoder.eval_idx + 1
        self.layers = nn.ModuleList(DeployDecoderLayer(layer) for layer in decoder.layers[:last])
        self.query_pos_head = decoder.query_pos_head
        self.pre_bbox_head = decoder.pre_bbox_head
        self.bbox_embed = nn.ModuleList(decoder.bbox_embed[:last])
        self.class_head = decoder.class_embed[decoder.eval_idx]
        self.lqe = decoder.lqe_layers[decoder.eval_idx]
        self.reg_scale = float(decoder.reg_scale.detach().reshape(-1)[0])
        self.spatial_shapes = tuple((int(h), int(w)) for h, w in spatial_shapes)
        # buffers in the model's dtype (float32 normally; float64 when a test wants exactness)
        dtype = model.enc_score_head.weight.dtype
        with torch.no_grad():
            project = weighting_function(decoder.max_num_bins, decoder.up.detach(), decoder.reg_scale.detach())
        self.register_buffer("project", project.to(dtype))
        anchors, valid = self._anchors(self.spatial_shapes, decoder.reg_scale.device, dtype)
        self.register_buffer("anchors", anchors)
        self.register_buffer("valid_mask", valid)
        self.register_buffer("value_scales", torch.tensor([[w, h] for h, w in self.spatial_shapes],
                                                          dtype=dtype, device=anchors.device))

    @staticmethod
    def _anchors(shapes: tuple[tuple[int, int], ...], device: torch.device,
                 dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        logits, valid = generate_anchors(shapes, device=device, dtype=dtype)
        logits = torch.where(valid, logits, torch.full_like(logits, _INVALID_ANCHOR_LOGIT))
        return logits, valid.to(dtype)

    def forward(self, maps: list[Tensor]) -> DetectionOutput | DetectionWithUncertainty:
        """maps: one (B, d, H_l, W_l) map per level, finest first."""
        dtype = self.enc_score_head.weight.dtype
        shapes = tuple((int(m.shape[2]), int(m.shape[3])) for m in maps)
        memory = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1).to(dtype)  # (B, S, d)
        if shapes == self.spatial_shapes:
            anchors, valid, value_scales = self.anchors, self.valid_mask, self.value_scales
        else:  # another input size: eager only (creates tensors)
            anchors, valid = self._anchors(shapes, memory.device, dtype)
            value_scales = torch.tensor([[w, h] for h, w in shapes], dtype=dtype, device=memory.device)
        anchors, valid, value_scales = anchors.to(dtype), valid.to(dtype), value_scales.to(dtype)

        # two-stage query selection (original: DFINETransformer._select_topk): score every token, keep the best Q.
        # Token-sized tensors (B·S·d, float32) are the largest of the head and set the peak memory at large batch,
        # so few are kept alive: enc_output's Linear(memory · valid) is computed as (memory Wᵀ) · valid + b without
        # a masked copy, and the scored tokens are dropped before the value maps are laid out.
        batch = memory.shape[0]
        linear, norm = self.enc_output[0], self.enc_output[1]
        output_memory = norm(F.linear(memory, linear.weight).mul_(valid).add_(linear.bias))
        enc_class = self.enc_score_head(output_memory)
        topk_index = enc_class.max(dim=-1).values.topk(self.num_queries, dim=1).indices  # (B, Q)
        selected = output_memory.gather(1, topk_index[..., None].expand(-1, -1, output_memory.shape[-1]))
        del output_memory, enc_class
        selected_anchors = anchors.expand(batch, -1, -1).gather(1, topk_index[..., None].expand(-1, -1, 4))
        reference = (self.enc_bbox_head(selected) + selected_anchors).sigmoid()

        # per-head value maps for the deformable attention, laid out once for all layers: (B·M, D, H_l, W_l)
        heads = self.layers[0].cross_heads
        dim = memory.shape[-1]
        value = memory.view(batch, -1, heads, dim // heads).permute(0, 2, 3, 1).reshape(batch * heads, dim // heads, -1)
        del memory  # the layout above is a copy (a view when the batch is 1)
        # laid out once here when grid_sample needs it (reduced precision on the CPU), not again in every layer
        values = [grid_sample_layout(v.view(batch * heads, dim // heads, h, w))
                  for v, (h, w) in zip(value.split([h * w for h, w in shapes], dim=-1), shapes)]
        scales = list(value_scales.unbind(0))

        return self._decode(selected, reference, values, scales)

    def _decode(self, hidden: Tensor, reference: Tensor, values: list[Tensor], scales: list[Tensor]
                ) -> DetectionOutput | DetectionWithUncertainty:
        """The FDR decoder (D-FINE paper, section "Fine-grained Distribution Refinement"), collecting only the
        evaluated layer."""
        return self._detections(*self._run_layers(hidden, reference, values, scales))

    def _detections(self, hidden: Tensor, corners: Tensor, boxes: Tensor, fixed_reference: Tensor
                    ) -> DetectionOutput | DetectionWithUncertainty:
        """The evaluated layer's outputs from its query states, corner logits and boxes."""
        project = self.project.to(hidden.dtype)
        logits = self.lqe(self.class_head(hidden), corners)
        if self.output_uncertainty:
            edges = edge_uncertainty(corners, fixed_reference, project, self.reg_scale)
            return DetectionWithUncertainty(logits=logits, pred_boxes=boxes, edge_uncertainty=edges.to(boxes.dtype))
        return DetectionOutput(logits=logits, pred_boxes=boxes)

    def _run_layers(self, hidden: Tensor, reference: Tensor, values: list[Tensor], scales: list[Tensor]
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The decoder layers up to the evaluated one: its query states, corner logits and boxes, and the fixed
        FDR reference."""
        project = self.project.to(hidden.dtype)
        previous: Tensor | None = None
        corners: Tensor | None = None
        fixed_reference = reference
        boxes = reference
        for i, layer in enumerate(self.layers):
            pos = self.query_pos_head(reference).clamp(-10, 10)
            hidden = layer(hidden, pos, reference, values, scales)
            if i == 0:
                fixed_reference = torch.sigmoid(self.pre_bbox_head(hidden) + inverse_sigmoid(reference))
            head_input = hidden if previous is None else hidden + previous
            step = self.bbox_embed[i](head_input)
            corners = step if corners is None else step + corners
            probs = corners.unflatten(-1, (4, -1)).softmax(dim=-1)
            distances = F.linear(probs, project[None]).squeeze(-1)
            boxes = distance2bbox(fixed_reference, distances, self.reg_scale)
            reference = boxes
            previous = hidden
        assert corners is not None
        return hidden, corners, boxes, fixed_reference
