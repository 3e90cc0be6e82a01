"""Hybrid encoder: AIFI self-attention on the coarsest level, then CCFF top-down and bottom-up fusion.

RT-DETR's efficient hybrid encoder (Zhao et al., arXiv 2304.08069: AIFI and CCFF) with D-FINE's GELAN blocks (the
original repository's ``src/zoo/dfine/hybrid_encoder.py: HybridEncoder``). Input: the backbone maps already
projected to ``encoder_hidden_dim`` channels (the projections live on :class:`~dfine.model.network.DFineModel` so
that state-dict keys match the checkpoints).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from dfine.config import DFineConfig
from dfine.model.layers import MLP, ConvNormLayer, MultiHeadSelfAttention, RepNCSPELAN4, SCDown


@functools.lru_cache(maxsize=16)
def sincos_position_embedding(height: int, width: int, dim: int, temperature: float, device: torch.device,
                              dtype: torch.dtype) -> Tensor:
    """2-D sin-cos embedding (1, H·W, dim), tokens row-major (y outer): [sin(yω), cos(yω), sin(xω), cos(xω)].

    For square maps this equals the original repository; for rectangles the original orders its grid with x
    outer, which pairs tokens with the wrong positions (original:
    ``HybridEncoder.build_2d_sincos_position_embedding``). We use the geometrically right order.
    Built in float64 (float32 where the device has no float64) and cast, as Hugging Face does.
    """
    compute = torch.float32 if device.type == "mps" else torch.float64
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=compute, device=device) / quarter)
    grid_y, grid_x = torch.meshgrid(torch.arange(height, dtype=compute, device=device),
                                    torch.arange(width, dtype=compute, device=device), indexing="ij")
    emb_y = grid_y.flatten()[:, None] * omega[None]
    emb_x = grid_x.flatten()[:, None] * omega[None]
    return torch.cat([emb_y.sin(), emb_y.cos(), emb_x.sin(), emb_x.cos()], dim=1).to(dtype)[None]


class EncoderLayer(nn.Module):
    """Transformer encoder layer, post-norm by default (``normalize_before`` switches to pre-norm)."""

    def __init__(self, config: DFineConfig) -> None:
        super().__init__()
        dim = config.encoder_hidden_dim
        self.normalize_before = config.normalize_before
        self.self_attn = MultiHeadSelfAttention(dim, config.encoder_attention_heads, config.dropout)
        self.self_attn_layer_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = MLP(dim, config.encoder_ffn_dim, dim, 2, config.encoder_activation_function)
        self.final_layer_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        residual = x
        if self.normalize_before:
            x = self.self_attn_layer_norm(x)
        x = residual + self.dropout(self.self_attn(x, pos))
        if not self.normalize_before:
            x = self.self_attn_layer_norm(x)
        residual = x
        if self.normalize_before:
            x = self.final_layer_norm(x)
        x = residual + self.dropout(self.mlp(x))
        if not self.normalize_before:
            x = self.final_layer_norm(x)
        if self.training:
            # Keep an fp16 overflow from poisoning the whole step (as both references do); a clamp instead of an
            # isfinite() test avoids a host sync and is a no-op on finite values.
            limit = torch.finfo(x.dtype).max - 1000
            x = x.clamp(-limit, limit)
        return x


class AIFILayer(nn.Module):
    """Intra-scale attention over one feature map (B, h, H, W) -> (B, h, H, W)."""

    def __init__(self, config: DFineConfig) -> None:
        super().__init__()
        self.dim = config.encoder_hidden_dim
        self.temperature = float(config.positional_encoding_temperature)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.encoder_layers))

    def forward(self, feature_map: Tensor) -> Tensor:
        batch, _, height, width = feature_map.shape
        x = feature_map.flatten(2).transpose(1, 2)
        pos = sincos_position_embedding(height, width, self.dim, self.temperature, x.device, x.dtype)
        for layer in self.layers:
            x = layer(x, pos)
        # reshape() of the transposed tokens is a channels-last view; make it NCHW so the convolutions that follow
        # run the same kernels (and give the same numbers) as for every other level.
        return x.transpose(1, 2).reshape(batch, self.dim, height, width).contiguous()


class HybridEncoder(nn.Module):
    """AIFI + CCFF. Takes and returns one (B, h, H_l, W_l) map per level, finest first."""

    def __init__(self, config: DFineConfig) -> None:
        super().__init__()
        width = config.encoder_hidden_dim
        levels = len(config.encoder_in_channels)
        eps = config.batch_norm_eps
        self.encode_proj_layers = list(config.encode_proj_layers)
        self.aifi = nn.ModuleList(AIFILayer(config) for _ in self.encode_proj_layers)
        self.use_aifi = config.encoder_layers > 0
        hidden = round(config.hidden_expansion * width // 2)
        blocks = round(3 * config.depth_mult)
        act = config.activation_function
        self.lateral_convs = nn.ModuleList(ConvNormLayer(width, width, 1, eps=eps) for _ in range(levels - 1))
        self.fpn_blocks = nn.ModuleList(RepNCSPELAN4(width, hidden, blocks, csp_act=act, eps=eps)
                                        for _ in range(levels - 1))
        self.downsample_convs = nn.ModuleList(SCDown(width, eps) for _ in range(levels - 1))
        self.pan_blocks = nn.ModuleList(RepNCSPELAN4(width, hidden, blocks, csp_act=act, eps=eps)
                                        for _ in range(levels - 1))

    def forward(self, feature_maps: list[Tensor]) -> list[Tensor]:
        maps = list(feature_maps)
        if self.use_aifi:
            for aifi, level in zip(self.aifi, self.encode_proj_layers):
                maps[level] = aifi(maps[level])

        # Top-down: the lateral conv output of each coarser level is both upsampled into the next finer fusion
        # and kept for the bottom-up path (the PAN concatenates these lateral maps, as the original's
        # ``HybridEncoder.forward`` does).
        laterals = []
        top = maps[-1]
        for i, (lateral, fpn) in enumerate(zip(self.lateral_convs, self.fpn_blocks)):
            top = lateral(top)
            laterals.append(top)
            upsampled = nn.functional.interpolate(top, scale_factor=2.0, mode="nearest")
            top = fpn(torch.cat([upsampled, maps[-2 - i]], dim=1))

        outputs = [top]
        for i, (down, pan) in enumerate(zip(self.downsample_convs, self.pan_blocks)):
            outputs.append(pan(torch.cat([down(outputs[-1]), laterals[-1 - i]], dim=1)))
        return outputs
