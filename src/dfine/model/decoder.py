"""D-FINE decoder: deformable cross-attention layers with Fine-grained Distribution Refinement.

D-FINE paper, section "Fine-grained Distribution Refinement"; the original repository's
``src/zoo/dfine/dfine_decoder.py: TransformerDecoder``. Each layer predicts, per box edge, a distribution over
``N + 1`` bins; the distribution logits are refined residually from layer to layer, and every layer's box is decoded
around the same fixed reference — the first layer's "pre" box — rather than around the previous layer's box.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dfine.config import DFineConfig
from dfine.model.layers import MLP, Gate, MultiHeadSelfAttention
from dfine.ops.boxes import inverse_sigmoid
from dfine.ops.deform_attn import deformable_attention_core
from dfine.ops.fdr import distance2bbox, distribution_integral, weighting_function


class DeformableCrossAttention(nn.Module):
    """Multi-scale deformable attention with box references and per-level point counts (no value/output proj)."""

    def __init__(self, config: DFineConfig) -> None:
        super().__init__()
        self.num_heads = config.decoder_attention_heads
        self.num_points_list = config.num_points_list
        self.offset_scale = config.decoder_offset_scale
        self.method = config.decoder_method
        total_points = sum(self.num_points_list)
        self.sampling_offsets = nn.Linear(config.d_model, self.num_heads * total_points * 2)
        self.attention_weights = nn.Linear(config.d_model, self.num_heads * total_points)
        # Offsets of a level's points are scaled by 1/n_l, so levels with more points spread them more finely.
        scale = [1.0 / n for n in self.num_points_list for _ in range(n)]
        self.register_buffer("num_points_scale", torch.tensor(scale, dtype=torch.float32))

    def forward(self, query: Tensor, reference_boxes: Tensor, value: Tensor,
                spatial_shapes: list[tuple[int, int]]) -> Tensor:
        """query (B, Q, d), reference_boxes (B, Q, 4) cxcywh, value (B, S, d) -> (B, Q, d)."""
        batch, num_queries, dim = query.shape
        total_points = self.num_points_scale.shape[0]
        offsets = self.sampling_offsets(query).view(batch, num_queries, self.num_heads, total_points, 2)
        weights = self.attention_weights(query).view(batch, num_queries, self.num_heads, total_points)
        weights = weights.softmax(dim=-1)
        # location = centre + offset · (1 / n_l) · (w, h) · offset_scale
        scale = self.num_points_scale.to(query.dtype)[:, None]  # (P, 1)
        centre = reference_boxes[:, :, None, None, :2]
        size = reference_boxes[:, :, None, None, 2:]
        locations = centre + offsets * scale * size * self.offset_scale
        heads_value = value.view(batch, value.shape[1], self.num_heads, dim // self.num_heads)
        return deformable_attention_core(heads_value, spatial_shapes, locations, weights, self.num_points_list,
                                         self.method)


class DecoderLayer(nn.Module):
    """Self-attention -> add & norm -> deformable cross-attention -> gate -> FFN -> add & norm (post-norm)."""

    def __init__(self, config: DFineConfig) -> None:
        super().__init__()
        dim = config.d_model
        self.self_attn = MultiHeadSelfAttention(dim, config.decoder_attention_heads, config.attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.encoder_attn = DeformableCrossAttention(config)
        self.gateway = Gate(dim)
        self.mlp = MLP(dim, config.decoder_ffn_dim, dim, 2, config.decoder_activation_function)
        self.final_layer_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, pos: Tensor, reference_boxes: Tensor, memory: Tensor,
                spatial_shapes: list[tuple[int, int]], attn_mask: Tensor | None = None) -> Tensor:
        x = self.self_attn_layer_norm(x + self.dropout(self.self_attn(x, pos, attn_mask)))
        cross = self.encoder_attn(x + pos, reference_boxes, memory, spatial_shapes)
        x = self.gateway(x, self.dropout(cross))
        # Clamp before the norm so an fp16 overflow in the FFN cannot become inf (as both references do).
        return self.final_layer_norm((x + self.mlp(x)).clamp(-65504, 65504))


class LQE(nn.Module):
    """Localisation-quality estimate from the corner distributions, added to every class logit (original: ``LQE``)."""

    def __init__(self, config: DFineConfig) -> None:
        super().__init__()
        self.top_k = config.top_prob_values
        self.num_bins = config.max_num_bins + 1
        self.reg_conf = MLP(4 * (self.top_k + 1), config.lqe_hidden_dim, 1, config.lqe_layers)

    def forward(self, logits: Tensor, corners: Tensor) -> Tensor:
        """logits (B, Q, C), corners (B, Q, 4·(N+1)) -> (B, Q, C)."""
        batch, length, _ = corners.shape
        probs = corners.view(batch, length, 4, self.num_bins).softmax(dim=-1)
        top = probs.topk(self.top_k, dim=-1).values
        stats = torch.cat([top, top.mean(dim=-1, keepdim=True)], dim=-1).view(batch, length, -1)
        return logits + self.reg_conf(stats)


@dataclass
class DecoderOutput:
    """Per-layer predictions. In eval mode only layer ``eval_idx`` is collected (L' = 1, and no pre entry)."""

    last_hidden_state: Tensor  # (B, Q, d)
    intermediate_hidden_states: Tensor  # (L_run, B, Q, d)
    intermediate_logits: Tensor  # (B, L'+1, Q, C) in training (index 0 = pre head), (B, 1, Q, C) in eval
    intermediate_reference_points: Tensor  # same layout, boxes cxcywh
    intermediate_predicted_corners: Tensor  # (B, L', Q, 4·(N+1))
    initial_reference_points: Tensor  # (B, L', Q, 4): the fixed FDR reference (detached pre box)


class DFineDecoder(nn.Module):
    def __init__(self, config: DFineConfig) -> None:
        super().__init__()
        dim = config.d_model
        num_layers = config.decoder_layers
        self.num_layers = num_layers
        self.eval_idx = config.eval_idx % num_layers
        self.max_num_bins = config.max_num_bins
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(num_layers))
        self.query_pos_head = MLP(4, 2 * dim, dim, 2)
        self.pre_bbox_head = MLP(dim, dim, 4, 3)
        self.lqe_layers = nn.ModuleList(LQE(config) for _ in range(num_layers))
        self.class_embed = nn.ModuleList(nn.Linear(dim, config.num_labels) for _ in range(num_layers))
        self.bbox_embed = nn.ModuleList(MLP(dim, dim, 4 * (config.max_num_bins + 1), 3) for _ in range(num_layers))
        # Stored in checkpoints as (non-trainable) parameters; the stored values win over the config at inference
        # (D-FINE-X uses reg_scale 8, ``configs/dfine/dfine_hgnetv2_x_coco.yml``, while a config that does not
        # say so has the default 4).
        self.reg_scale = nn.Parameter(torch.tensor([float(config.reg_scale)]), requires_grad=False)
        self.up = nn.Parameter(torch.tensor([float(config.up)]), requires_grad=False)

    def forward(self, queries: Tensor, reference_logits: Tensor, memory: Tensor,
                spatial_shapes: list[tuple[int, int]], attn_mask: Tensor | None = None) -> DecoderOutput:
        """Run the decoder.

        Args:
            queries: (B, Q, d) content queries (denoising queries first, if any).
            reference_logits: (B, Q, 4) initial boxes in logit space (detached).
            memory: (B, S, d) flattened multi-level encoder memory.
            spatial_shapes: [(H_l, W_l)] per level.
            attn_mask: (Q, Q) additive self-attention mask for denoising, or None.
        """
        training = self.training
        last_layer = self.num_layers - 1 if training else self.eval_idx  # the original stops at eval_idx
        project = weighting_function(self.max_num_bins, self.up, self.reg_scale)
        reference = reference_logits.sigmoid()
        hidden = queries
        previous_hidden: Tensor | int = 0
        corners: Tensor | int = 0
        hidden_states, logits, boxes, all_corners, references = [], [], [], [], []
        fixed_reference = reference
        for i, layer in enumerate(self.layers[: last_layer + 1]):
            pos = self.query_pos_head(reference).clamp(-10, 10)
            hidden = layer(hidden, pos, reference, memory, spatial_shapes, attn_mask)
            if i == 0:
                pre_boxes = torch.sigmoid(self.pre_bbox_head(hidden) + inverse_sigmoid(reference))
                fixed_reference = pre_boxes.detach()
            # Residual refinement in logit space; the head also sees the detached previous layer output.
            corners = self.bbox_embed[i](hidden + previous_hidden) + corners
            layer_boxes = distance2bbox(fixed_reference, distribution_integral(corners, project), self.reg_scale)
            reference = layer_boxes.detach()
            previous_hidden = hidden.detach()
            hidden_states.append(hidden)
            if training or i == last_layer:
                scores = self.class_embed[i](hidden)
                if i == 0 and training:
                    logits.append(scores)
                    boxes.append(pre_boxes)
                logits.append(self.lqe_layers[i](scores, corners))
                boxes.append(layer_boxes)
                all_corners.append(corners)
                references.append(fixed_reference)
        return DecoderOutput(
            last_hidden_state=hidden,
            intermediate_hidden_states=torch.stack(hidden_states),
            intermediate_logits=torch.stack(logits, dim=1),
            intermediate_reference_points=torch.stack(boxes, dim=1),
            intermediate_predicted_corners=torch.stack(all_corners, dim=1),
            initial_reference_points=torch.stack(references, dim=1),
        )


__all__ = ["DFineDecoder", "DecoderOutput"]
