"""The D-FINE network (Peng et al., arXiv 2410.13842; the original ``DFINE`` in ``src/zoo/dfine/dfine.py``): HGNetv2
backbone -> hybrid encoder -> two-stage query selection -> decoder with FDR.

Module names follow Hugging Face's in-memory layout, so a hub ``model.safetensors`` loads with at most the legacy
renames of :mod:`dfine.hub.convert`. ``forward`` checks its inputs, so a mistake is a one-line error instead of a
failure deep inside a convolution.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from dfine.config import DFineConfig
from dfine.errors import DFineError, ModelInputError
from dfine.model.anchors import generate_anchors
from dfine.model.backbone import DFineBackbone
from dfine.model.decoder import DFineDecoder
from dfine.model.denoising import build_denoising_queries
from dfine.model.encoder import HybridEncoder
from dfine.model.hf_compat import TransformersModelMixin
from dfine.model.inputs import check_feature_maps, check_flags, check_labels, check_pixel_values, encoder_output_parts
from dfine.model.layers import MLP
from dfine.model.mask_head import MaskDecoder, mask_embedding_head, mask_logits
from dfine.model.outputs import DFineModelOutput


@contextmanager
def _recording_aifi(encoder: HybridEncoder, enabled: bool) -> Iterator[list[Tensor]]:
    """Collect transformers' ``encoder_hidden_states``: the first AIFI block's input, then every AIFI output.

    Hooks rather than a second code path, so the default forward is untouched; they exist only while asked for.
    """
    record: list[Tensor] = []
    if not enabled:
        yield record
        return

    def hook(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
        if not record:
            record.append(args[0])
        record.append(output)

    handles = [block.register_forward_hook(hook) for block in encoder.aifi]
    try:
        yield record
    finally:
        for handle in handles:
            handle.remove()


def _wants_masks(training: bool, labels: list[dict[str, Tensor]] | None) -> bool:
    """Masks are predicted at inference, and in training when some target carries masks: a batch of boxes only
    trains detection alone (D-FINE-seg's ``DFINETransformer._should_do_masks``). Unlike D-FINE-seg, a batch of a
    segmentation data set whose images happen to have no object (empty ``masks``) still runs the mask branch: its
    loss terms are then 0, but the set of terms and of parameters with a gradient stays the same from step to step,
    which a distributed run needs."""
    if not training or labels is None:
        return True
    return any(isinstance(t.get("masks"), Tensor) for t in labels)


class DFineNetwork(TransformersModelMixin):
    """The D-FINE network without the loss. ``forward(pixel_values)`` -> :class:`DFineModelOutput`.

    The public class is :class:`dfine.model.detection.DFineModel`, this network with ``from_pretrained``; the
    loading machinery sits above the network because reading an original checkpoint builds networks to size it.
    """

    def __init__(self, config: DFineConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.d_model
        # D-FINE-N-seg: the backbone also returns a stride-8 map, first, which only the mask branch reads
        low_level = config.mask_low_level_stage
        self.backbone = DFineBackbone(config.backbone_config, config.freeze_backbone_batch_norms,
                                      None if low_level is None else [low_level, *config.backbone_config.out_indices])
        encoder_channels = self.backbone.channels[0 if low_level is None else 1:]
        self.encoder_input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, config.encoder_hidden_dim, 1, bias=False),
                          nn.BatchNorm2d(config.encoder_hidden_dim))
            for c in encoder_channels[: len(config.decoder_in_channels)]
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
        if config.use_mask_head:  # D-FINE-seg's names: decoder.mask_decoder / decoder.mask_head in its files
            low_level_channels = [] if low_level is None else self.backbone.channels[:1]
            self.mask_decoder = MaskDecoder([*low_level_channels, *config.decoder_in_channels], config.mask_dim)
            self.mask_head = mask_embedding_head(dim, config.mask_dim)
        self.reset_parameters()

    # -- initialisation (original: DFINETransformer._reset_parameters) ---------------------------------------------
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

    def _check_inputs(self, pixel_values: Any, inputs_embeds: Any, encoder_outputs: Any) -> int:
        """Check what the forward starts from; returns the batch size."""
        levels, channels = len(self.encoder_input_proj), self.config.encoder_hidden_dim
        if pixel_values is None and self.config.mask_low_level_stage is not None:
            raise ModelInputError("this model's mask branch reads a backbone map the encoder does not see: pass "
                                  "pixel_values, not inputs_embeds / encoder_outputs")
        if encoder_outputs is not None:
            maps = encoder_output_parts(encoder_outputs)[0]
            return check_feature_maps(maps, "encoder_outputs[0]", levels, channels)[0].shape[0]
        if inputs_embeds is not None:
            return check_feature_maps(inputs_embeds, "inputs_embeds", levels, channels)[0].shape[0]
        if pixel_values is None:
            raise ModelInputError("pass pixel_values (B, 3, H, W), or inputs_embeds / encoder_outputs")
        check_pixel_values(pixel_values, max(self.config.feat_strides), self.device)
        return pixel_values.shape[0]

    def forward(
        self,
        pixel_values: Tensor | None,
        pixel_mask: Tensor | None = None,
        encoder_outputs: Any = None,
        inputs_embeds: list[Tensor] | None = None,
        labels: list[dict[str, Tensor]] | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> DFineModelOutput | tuple[Any, ...]:
        """The arguments of transformers' ``DFineModel.forward``.

        Args:
            pixel_values: (B, 3, H, W) RGB in [0, 1]; H and W multiples of 32. May be None with one of the next two.
            pixel_mask: accepted for API compatibility and ignored (D-FINE has no padding masks).
            encoder_outputs: the encoder's output maps, as transformers' ``BaseModelOutput`` or tuple (element 0: a
                list of (B, encoder_hidden_dim, H_l, W_l) maps); the backbone and encoder are skipped.
            inputs_embeds: the encoder's input maps (backbone + ``encoder_input_proj``), a list like the above;
                the backbone is skipped.
            labels: training targets (see :data:`LABELS_FORMAT`), used for denoising queries in training mode.
            output_attentions: True is an error (attention weights are not available).
            output_hidden_states: fill ``encoder_hidden_states`` and ``decoder_hidden_states``.
            return_dict: False returns ``to_tuple()``.
        """
        batch_size = self._check_inputs(pixel_values, inputs_embeds, encoder_outputs)
        check_flags(output_attentions, output_hidden_states, return_dict)
        if labels is not None:
            check_labels(labels, batch_size)
        outputs = self._forward(pixel_values, encoder_outputs, inputs_embeds, labels, bool(output_hidden_states))
        return outputs.to_tuple() if return_dict is False else outputs

    def _encode(self, pixel_values: Tensor | None, encoder_outputs: Any, inputs_embeds: list[Tensor] | None,
                output_hidden_states: bool) -> tuple[list[Tensor], tuple[Tensor, ...] | None, Tensor | None]:
        """The encoder's output maps, transformers' ``encoder_hidden_states`` when asked, and the backbone map that
        only the mask branch reads (D-FINE-N-seg; else None)."""
        if encoder_outputs is not None:
            maps, hidden = encoder_output_parts(encoder_outputs)
            return list(maps), (tuple(hidden) if output_hidden_states and hidden is not None else None), None
        low_level = None
        if inputs_embeds is None:
            assert pixel_values is not None  # checked by _check_inputs
            features = self.backbone(pixel_values)
            if self.config.mask_low_level_stage is not None:
                low_level, features = features[0], features[1:]
            inputs_embeds = [proj(f) for proj, f in zip(self.encoder_input_proj, features)]
        with _recording_aifi(self.encoder, output_hidden_states) as record:
            maps = self.encoder(list(inputs_embeds))
        return maps, (tuple(record) if output_hidden_states else None), low_level

    def _predict_masks(self, encoder_maps: list[Tensor], low_level: Tensor | None, queries: Tensor) -> Tensor:
        """(B, L', Q, H/4, W/4) mask logits of the decoder layers in ``queries`` (L', B, Q, d), from the encoder's
        maps before the decoder's input projection (plus the backbone's stride-8 map for N), as D-FINE-seg's
        ``DFINETransformer.forward``."""
        maps = encoder_maps if low_level is None else [low_level, *encoder_maps]
        return mask_logits(self.mask_head, queries, self.mask_decoder(maps))

    def _forward(self, pixel_values: Tensor | None, encoder_outputs: Any, inputs_embeds: list[Tensor] | None,
                 labels: list[dict[str, Tensor]] | None, output_hidden_states: bool) -> DFineModelOutput:
        config = self.config
        encoder_maps, encoder_hidden_states, low_level = self._encode(pixel_values, encoder_outputs, inputs_embeds,
                                                                      output_hidden_states)
        memory, spatial_shapes = self._flatten_levels(encoder_maps)
        if memory.shape[1] < config.num_queries:
            if pixel_values is not None:
                height, width = pixel_values.shape[-2:]
                source = f"a {height}x{width} input"
            else:
                source = "the given feature maps"
            raise DFineError(f"{source} gives {memory.shape[1]} encoder tokens, fewer than the "
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
        # transformers' decoder_hidden_states: the decoder's input, then every layer's output (already stacked).
        decoder_hidden_states = ((queries, *decoded.intermediate_hidden_states.unbind(0)) if output_hidden_states
                                 else None)
        masks = None
        if self.config.use_mask_head and _wants_masks(self.training, labels):
            # training: every layer (denoising queries included) for the auxiliary and denoising mask losses;
            # inference: the evaluated layer only
            layers = decoded.intermediate_hidden_states
            masks = self._predict_masks(encoder_maps, low_level, layers if self.training else layers[-1:])
        return DFineModelOutput(
            last_hidden_state=decoded.last_hidden_state,
            intermediate_hidden_states=decoded.intermediate_hidden_states,
            intermediate_logits=decoded.intermediate_logits,
            intermediate_reference_points=decoded.intermediate_reference_points,
            intermediate_predicted_corners=decoded.intermediate_predicted_corners,
            initial_reference_points=decoded.initial_reference_points,
            decoder_hidden_states=decoder_hidden_states,
            encoder_last_hidden_state=encoder_maps,
            encoder_hidden_states=encoder_hidden_states,
            init_reference_points=init_reference_points,
            enc_topk_logits=enc_topk_logits,
            enc_topk_bboxes=enc_topk_bboxes,
            enc_outputs_class=enc_outputs_class,
            denoising_meta_values=meta,
            intermediate_predicted_masks=masks,
        )
