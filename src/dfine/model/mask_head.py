"""The mask branch of D-FINE-seg (ArgoHA/D-FINE-seg 0.6.2, Apache-2.0): a pixel decoder that fuses the multi-scale
maps into one stride-4 feature map per image, and a per-query embedding whose dot product with it gives the mask
logits.

Both follow ``MaskDecoder`` and ``DFINETransformer._mask_logits_from_h`` in D-FINE-seg's
``dfine_seg/model/arch/dfine_decoder.py``; module and parameter names are theirs (``lateral``, ``bn`` (GroupNorms,
despite the name), ``fusion_conv`` ...), so the released ``dfine_seg_*_coco.pt`` tensors load by a prefix change.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfine.model.layers import MLP

# GroupNorm groups of every norm in the pixel decoder (D-FINE-seg's ``n_groups``).
GROUP_NORM_GROUPS = 32


class MaskDecoder(nn.Module):
    """Pixel decoder: per level a 1×1 projection to ``out_channels`` and a GroupNorm, the coarser levels bilinearly
    upsampled onto the finest (stride 8) and summed, a 3×3 conv + GroupNorm + ReLU, a bilinear ×2 upsampling and a
    second 3×3 conv + GroupNorm + ReLU: (B, out_channels, H/4, W/4), non-negative.

    Args:
        in_channels: channels of the input maps, finest (stride 8) first.
        out_channels: D, the mask embedding width (``mask_dim``).
    """

    def __init__(self, in_channels: list[int], out_channels: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1, bias=False) for c in in_channels)
        self.bn = nn.ModuleList(nn.GroupNorm(GROUP_NORM_GROUPS, out_channels) for _ in in_channels)
        self.fusion_conv = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.fusion_norm = nn.GroupNorm(GROUP_NORM_GROUPS, out_channels)
        # bilinear upsampling followed by a conv, rather than a transposed conv (no checkerboard pattern)
        self.up_conv = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.GroupNorm(GROUP_NORM_GROUPS, out_channels)
        nn.init.kaiming_normal_(self.up_conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, maps: list[Tensor]) -> Tensor:
        if len(maps) != len(self.lateral):
            raise ValueError(f"the pixel decoder takes {len(self.lateral)} maps, got {len(maps)}")
        fused = self.bn[0](self.lateral[0](maps[0]))
        size = fused.shape[-2:]
        for lateral, norm, level in zip(self.lateral[1:], self.bn[1:], maps[1:]):
            fused = fused + F.interpolate(norm(lateral(level)), size=size, mode="bilinear", align_corners=False)
        fused = F.relu(self.fusion_norm(self.fusion_conv(fused)))
        fused = F.interpolate(fused, scale_factor=2.0, mode="bilinear", align_corners=False)
        return F.relu(self.bn1(self.up_conv(fused)))


def mask_embedding_head(hidden_dim: int, mask_dim: int) -> MLP:
    """The per-query mask embedding, d -> d -> d -> D with ReLU between: one head shared by every decoder layer and
    the denoising queries."""
    return MLP(hidden_dim, hidden_dim, mask_dim, 3)


def mask_logits(embedding_head: nn.Module, queries: Tensor, pixel_features: Tensor) -> Tensor:
    """Mask logits of every query of every given decoder layer.

    ``logit[b, l, q, y, x] = D^-1/2 · Σ_c E[l, b, q, c] · M[b, c, y, x]`` with E = ``embedding_head(queries)``: the
    1/√D scale keeps the sum of D products at the scale of one (as attention scales its dot products).

    Args:
        embedding_head: :func:`mask_embedding_head`.
        queries: (L, B, Q, d) decoder layer outputs (the query states the class and box heads read).
        pixel_features: (B, D, H/4, W/4) from :class:`MaskDecoder`.

    Returns:
        (B, L, Q, H/4, W/4) logits (no bias: a pixel's logit is 0 where the pixel features vanish).
    """
    embedding = embedding_head(queries)
    embedding = embedding * embedding.shape[-1] ** -0.5
    if torch.is_grad_enabled() and (embedding.requires_grad or pixel_features.requires_grad):
        return _SparseGradientMaskLogits.apply(embedding, pixel_features)
    return torch.einsum("lbqc,bchw->blqhw", embedding, pixel_features)


class _SparseGradientMaskLogits(torch.autograd.Function):
    """The einsum of :func:`mask_logits` with a backward pass that skips the masks without gradient.

    The mask losses read only the matched queries' masks, a few dozen of the L·Q per image: the dense backward
    multiplies mostly zeros, two products as large as the forward one. Rows whose gradient is exactly zero add exactly
    nothing, so leaving them out changes no value.
    """

    @staticmethod
    def forward(ctx: Any, embedding: Tensor, pixel_features: Tensor) -> Tensor:
        ctx.save_for_backward(embedding, pixel_features)
        return torch.einsum("lbqc,bchw->blqhw", embedding, pixel_features)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor]:
        embedding, pixel_features = ctx.saved_tensors
        batch, layers, queries, height, width = grad.shape
        rows = grad.reshape(batch, layers * queries, height * width)  # (B, L·Q, HW)
        features = pixel_features.flatten(2)  # (B, D, HW)
        per_image = embedding.permute(1, 0, 2, 3).reshape(batch, layers * queries, -1)  # (B, L·Q, D)
        grad_embedding = torch.zeros_like(per_image)
        grad_features = torch.zeros_like(features)
        for b in range(batch):
            used = rows[b].ne(0).any(dim=-1).nonzero()[:, 0]  # the (l, q) rows with a gradient
            if len(used):
                picked = rows[b, used].to(features.dtype)  # (K, HW)
                grad_embedding[b, used] = (picked @ features[b].T).to(grad_embedding.dtype)  # (K, D)
                grad_features[b] = per_image[b, used].T.to(features.dtype) @ picked  # (D, HW)
        grad_embedding = grad_embedding.reshape(batch, layers, queries, -1).permute(1, 0, 2, 3)
        return grad_embedding, grad_features.reshape(pixel_features.shape)


__all__ = ["GROUP_NORM_GROUPS", "MaskDecoder", "mask_embedding_head", "mask_logits"]
