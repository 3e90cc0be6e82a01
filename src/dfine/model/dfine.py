"""``DFineModel`` (backbone -> encoder -> query selection -> decoder) and ``DFineForObjectDetection``.

SPEC Part A §3. Module names follow Hugging Face's in-memory layout, so a hub ``model.safetensors`` loads with at
most the legacy renames of ``dfine.hub.convert``.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any

import torch
from torch import Tensor, nn

from dfine.config import DFineConfig
from dfine.errors import DFineError
from dfine.model.anchors import generate_anchors
from dfine.model.backbone import DFineBackbone
from dfine.model.decoder import DFineDecoder
from dfine.model.denoising import build_denoising_queries
from dfine.model.encoder import HybridEncoder
from dfine.model.layers import MLP
from dfine.model.outputs import DFineModelOutput, DFineObjectDetectionOutput
from dfine.model.pretrained import PretrainedMixin


class DFineModel(PretrainedMixin, nn.Module):
    """The D-FINE network without the loss. ``forward(pixel_values)`` -> :class:`DFineModelOutput`."""

    def __init__(self, config: DFineConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.d_model
        self.backbone = DFineBackbone(config.backbone_config, config.freeze_backbone_batch_norms)
        self.encoder_input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, config.encoder_hidden_dim, 1, bias=False),
                          nn.BatchNorm2d(config.encoder_hidden_dim))
            for c in self.backbone.channels[: len(config.decoder_in_channels)]
        )
        self.encoder = HybridEncoder(config)
        if config.num_denoising > 0:
            self.denoising_class_embed = nn.Embedding(config.num_labels + 1, dim, padding_idx=config.num_labels)
        self.enc_output = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim, eps=config.layer_norm_eps))
        self.enc_score_head = nn.Linear(dim, config.num_labels)
        self.enc_bbox_head = MLP(dim, dim, 4, 3)
        self.decoder_input_proj = nn.ModuleList()
        in_channels = config.decoder_in_channels[-1]
        for level in range(config.num_feature_levels):
            if dim == in_channels:
                self.decoder_input_proj.append(nn.Identity())
            else:
                # Levels beyond the encoder's are made by stride-2 convs from the coarsest map (unused by presets).
                extra = level >= len(config.decoder_in_channels)
                self.decoder_input_proj.append(nn.Sequential(
                    nn.Conv2d(in_channels, dim, 3 if extra else 1, 2 if extra else 1, 1 if extra else 0, bias=False),
                    nn.BatchNorm2d(dim, config.batch_norm_eps)))
        self.decoder = DFineDecoder(config)
        self.reset_parameters()

    # -- initialisation (original repository's, SPEC Part A §8.11) ---------------------------------------------
    @torch.no_grad()
    def reset_parameters(self) -> None:
        config = self.config
        prior = config.initializer_bias_prior_prob or 0.01
        class_bias = -math.log((1 - prior) / prior)
        nn.init.constant_(self.enc_score_head.bias, class_bias)
        for head in self.decoder.class_embed:
            nn.init.constant_(head.bias, class_bias)
        for mlp in [self.enc_bbox_head, self.decoder.pre_bbox_head, *self.decoder.bbox_embed]:
            nn.init.zeros_(mlp.layers[-1].weight)
            nn.init.zeros_(mlp.layers[-1].bias)
        for lqe in self.decoder.lqe_layers:
            nn.init.zeros_(lqe.reg_conf.layers[-1].weight)
            nn.init.zeros_(lqe.reg_conf.layers[-1].bias)
        nn.init.xavier_uniform_(self.enc_output[0].weight)
        for layer in self.decoder.query_pos_head.layers:
            nn.init.xavier_uniform_(layer.weight)
        for proj in self.decoder_input_proj:
            if isinstance(proj, nn.Sequential):
                nn.init.xavier_uniform_(proj[0].weight)
        heads = config.decoder_attention_heads
        for layer in self.decoder.layers:
            attn = layer.encoder_attn
            nn.init.zeros_(attn.sampling_offsets.weight)
            angles = torch.arange(heads, dtype=torch.float32) * (2 * math.pi / heads)
            directions = torch.stack([angles.cos(), angles.sin()], dim=-1)
            directions = directions / directions.abs().max(dim=-1, keepdim=True).values
            # point k of a level starts k cells away along its head's direction
            steps = torch.cat([torch.arange(1, n + 1, dtype=torch.float32) for n in attn.num_points_list])
            attn.sampling_offsets.bias.copy_((directions[:, None, :] * steps[None, :, None]).flatten())
            nn.init.zeros_(attn.attention_weights.weight)
            nn.init.zeros_(attn.attention_weights.bias)
            nn.init.zeros_(layer.gateway.gate.weight)
            nn.init.zeros_(layer.gateway.gate.bias)
            for linear in layer.mlp.layers:
                nn.init.xavier_uniform_(linear.weight)
        if hasattr(self, "denoising_class_embed"):
            nn.init.normal_(self.denoising_class_embed.weight)
            self.denoising_class_embed.weight[config.num_labels].zero_()

    # -- forward -------------------------------------------------------------------------------------------------
    def _flatten_levels(self, encoder_maps: list[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
        sources = [proj(m) for proj, m in zip(self.decoder_input_proj, encoder_maps)]
        for level in range(len(sources), self.config.num_feature_levels):
            sources.append(self.decoder_input_proj[level](encoder_maps[-1] if level == len(encoder_maps)
                                                          else sources[-1]))
        shapes = [(int(s.shape[2]), int(s.shape[3])) for s in sources]
        return torch.cat([s.flatten(2).transpose(1, 2) for s in sources], dim=1), shapes

    def forward(self, pixel_values: Tensor, pixel_mask: Tensor | None = None,
                labels: list[dict[str, Tensor]] | None = None, **kwargs: Any) -> DFineModelOutput:
        """Args:
            pixel_values: (B, 3, H, W) RGB in [0, 1]; H and W multiples of 32.
            pixel_mask: accepted for API compatibility and ignored (D-FINE has no padding masks).
            labels: training targets, used for denoising queries in training mode.
        """
        config = self.config
        features = self.backbone(pixel_values)
        projected = [proj(f) for proj, f in zip(self.encoder_input_proj, features)]
        encoder_maps = self.encoder(projected)
        memory, spatial_shapes = self._flatten_levels(encoder_maps)
        if memory.shape[1] < config.num_queries:
            height, width = pixel_values.shape[-2:]
            raise DFineError(f"a {height}x{width} input gives {memory.shape[1]} encoder tokens, fewer than the "
                             f"{config.num_queries} queries; use a larger image size")

        denoising = None
        if self.training and labels is not None and config.num_denoising > 0:
            denoising = build_denoising_queries(
                labels, config.num_labels, config.num_queries, self.denoising_class_embed, config.num_denoising,
                config.label_noise_ratio, config.box_noise_scale)

        anchors, valid_mask = generate_anchors(tuple(spatial_shapes), device=memory.device, dtype=memory.dtype)
        output_memory = self.enc_output(memory * valid_mask.to(memory.dtype))
        enc_outputs_class = self.enc_score_head(output_memory)  # (B, S, C)
        topk_index = enc_outputs_class.max(dim=-1).values.topk(config.num_queries, dim=1).indices  # (B, Q)
        selected_memory = output_memory.gather(1, topk_index[..., None].expand(-1, -1, output_memory.shape[-1]))
        # The box head is a per-token MLP, so running it on the selected tokens only gives the same numbers as
        # running it everywhere and gathering, at a fraction of the cost.
        selected_anchors = anchors.expand(memory.shape[0], -1, -1).gather(1, topk_index[..., None].expand(-1, -1, 4))
        reference_logits = self.enc_bbox_head(selected_memory) + selected_anchors
        enc_topk_bboxes = reference_logits.sigmoid()
        enc_topk_logits = enc_outputs_class.gather(1, topk_index[..., None].expand(-1, -1, config.num_labels))
        queries = selected_memory.detach()

        attn_mask = None
        meta = None
        if self.training and labels is not None and config.num_denoising > 0 and denoising is None:
            # No box in the whole batch: an empty denoising record (as the original) keeps the set of loss terms
            # the same on every rank, which the distributed loss averaging relies on.
            empty = torch.zeros(0, dtype=torch.long, device=memory.device)
            meta = {"dn_positive_idx": [empty] * len(labels), "dn_num_group": 1,
                    "dn_num_split": [0, config.num_queries]}
        if denoising is not None:
            dn_queries, dn_reference_logits, attn_mask, meta = denoising
            queries = torch.cat([dn_queries.to(queries.dtype), queries], dim=1)
            reference_logits = torch.cat([dn_reference_logits.to(reference_logits.dtype), reference_logits], dim=1)
        init_reference_points = reference_logits.detach()

        decoded = self.decoder(queries, init_reference_points, memory, spatial_shapes, attn_mask)
        return DFineModelOutput(
            last_hidden_state=decoded.last_hidden_state,
            intermediate_hidden_states=decoded.intermediate_hidden_states,
            intermediate_logits=decoded.intermediate_logits,
            intermediate_reference_points=decoded.intermediate_reference_points,
            intermediate_predicted_corners=decoded.intermediate_predicted_corners,
            initial_reference_points=decoded.initial_reference_points,
            encoder_last_hidden_state=encoder_maps,
            init_reference_points=init_reference_points,
            enc_topk_logits=enc_topk_logits,
            enc_topk_bboxes=enc_topk_bboxes,
            enc_outputs_class=enc_outputs_class,
            denoising_meta_values=meta,
        )


class DFineForObjectDetection(PretrainedMixin, nn.Module):
    """D-FINE with the detection outputs and, in training mode with ``labels``, the loss.

    ``forward(pixel_values)`` -> :class:`DFineObjectDetectionOutput` with ``logits`` (B, Q, C) and ``pred_boxes``
    (B, Q, 4) normalised cxcywh. Post-process with :meth:`dfine.DFineImageProcessor.post_process_object_detection`.
    """

    base_model_prefix = "model"

    def __init__(self, config: DFineConfig) -> None:
        super().__init__()
        self.config = config
        self.model = DFineModel(config)

    @cached_property
    def criterion(self) -> nn.Module:
        """The training loss (stateless; built on first use so inference never imports scipy)."""
        from dfine.loss import build_criterion

        return build_criterion(self.config)

    def deploy(self, image_size: int | tuple[int, int] | None = None) -> nn.Module:
        """An inference-only copy in deploy form (folded batch norm, merged RepVGG, precomputed buffers).

        See :func:`dfine.export.deploy.deploy`; this model is not changed. ``forward(pixel_values)`` of the copy
        returns ``(logits, pred_boxes)`` as a named tuple, equal to this model's outputs to float rounding.
        """
        from dfine.export.deploy import deploy

        return deploy(self, image_size)

    def optimize_for_inference(self, dtype: torch.dtype | str | None = None, compile: bool = False,
                               cuda_graph: bool = False, image_size: int | tuple[int, int] | None = None,
                               batch_size: int = 1, **kwargs: Any) -> nn.Module:
        """A fast inference copy: deploy form, fp16/bf16 (head in fp32), channels-last, torch.compile, CUDA graph.

        See :func:`dfine.export.fast.optimize_for_inference` for all options; this model is not changed.
        """
        from dfine.export.fast import optimize_for_inference

        return optimize_for_inference(self, dtype=dtype, compile=compile, cuda_graph=cuda_graph,
                                      image_size=image_size, batch_size=batch_size, **kwargs)

    def forward(self, pixel_values: Tensor, pixel_mask: Tensor | None = None,
                labels: list[dict[str, Tensor]] | None = None, **kwargs: Any) -> DFineObjectDetectionOutput:
        outputs = self.model(pixel_values, pixel_mask=pixel_mask, labels=labels)
        loss = loss_dict = None
        if labels is not None and self.training:
            loss_dict = self.criterion(outputs, labels, up=self.model.decoder.up,
                                       reg_scale=self.model.decoder.reg_scale)
            loss = sum(loss_dict.values())
        return DFineObjectDetectionOutput(
            loss=loss,
            loss_dict=loss_dict,
            logits=outputs.intermediate_logits[:, -1],
            pred_boxes=outputs.intermediate_reference_points[:, -1],
            **{name: getattr(outputs, name) for name in outputs.keys()},
        )
