"""Small building blocks shared by the encoder and decoder (the original repository's
``src/zoo/dfine/hybrid_encoder.py`` and ``src/zoo/dfine/dfine_decoder.py``).

Attribute names (``conv``, ``norm``, ``layers``, ``gate`` …) follow the Hugging Face checkpoints so that state-dict
keys match without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def activation(name: str | None) -> nn.Module:
    """The activation module for a config string (``relu``, ``silu``, ``gelu``; None = identity)."""
    if name is None:
        return nn.Identity()
    table = {"relu": nn.ReLU, "silu": nn.SiLU, "swish": nn.SiLU, "gelu": nn.GELU}
    try:
        return table[name.lower()]()
    except KeyError:
        raise ValueError(f"unsupported activation {name!r}; use one of {sorted(table)}") from None


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters, all stored as buffers.

    Used for the backbone of inference models and of L/X training (the original's ``freeze_norm``,
    ``src/nn/backbone/hgnetv2.py: HGNetv2``). eps is fixed at 1e-5 as in
    both reference implementations. ``num_batches_tracked`` from a trainable-BN checkpoint is ignored on load.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):  # type: ignore[override]
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def scale_and_shift(self) -> tuple[Tensor, Tensor]:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = self.scale_and_shift()
        return x * scale[None, :, None, None] + shift[None, :, None, None]

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def freeze_batch_norms(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` inside ``module`` by a :class:`FrozenBatchNorm2d` with the same values."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=1e-5).to(child.running_mean.device)
            with torch.no_grad():
                if child.affine:
                    frozen.weight.copy_(child.weight)
                    frozen.bias.copy_(child.bias)
                frozen.running_mean.copy_(child.running_mean)
                frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batch_norms(child)
    return module


class ConvNormLayer(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> optional activation. ``padding`` defaults to "same" for odd kernels."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 padding: int | None = None, act: str | None = None, eps: float = 1e-5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, groups=groups, bias=False,
                              padding=(kernel_size - 1) // 2 if padding is None else padding)
        self.norm = nn.BatchNorm2d(out_channels, eps)
        self.activation = activation(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.norm(self.conv(x)))


class RepVggBlock(nn.Module):
    """act(BN(conv3x3(x)) + BN(conv1x1(x))); the two branches fold into one 3×3 conv for deployment."""

    def __init__(self, channels: int, act: str, eps: float = 1e-5) -> None:
        super().__init__()
        self.conv1 = ConvNormLayer(channels, channels, 3, padding=1, eps=eps)
        self.conv2 = ConvNormLayer(channels, channels, 1, padding=0, eps=eps)
        self.activation = activation(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.conv1(x) + self.conv2(x))


class CSPRepLayer(nn.Module):
    """Cross-stage-partial layer: RepVGG blocks on one 1×1 branch, added to a second 1×1 branch."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, act: str, eps: float = 1e-5) -> None:
        super().__init__()
        # With expansion 1 (the only value D-FINE uses) the optional third conv is the identity: no keys.
        self.conv1 = ConvNormLayer(in_channels, out_channels, 1, act=act, eps=eps)
        self.conv2 = ConvNormLayer(in_channels, out_channels, 1, act=act, eps=eps)
        self.bottlenecks = nn.ModuleList(RepVggBlock(out_channels, act, eps) for _ in range(num_blocks))
        self.conv3 = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        branch = self.conv1(x)
        for block in self.bottlenecks:
            branch = block(branch)
        return self.conv3(branch + self.conv2(x))


class RepNCSPELAN4(nn.Module):
    """GELAN block of the CCFF fusion: 2h -> h channels with CSP hidden width ``hidden`` (original:
    ``src/zoo/dfine/hybrid_encoder.py: RepNCSPELAN4``)."""

    def __init__(self, width: int, hidden: int, num_blocks: int, act: str = "silu", csp_act: str = "silu",
                 eps: float = 1e-5) -> None:
        super().__init__()
        self.split = width
        # The GELAN convolutions use SiLU whatever the config says; only the CSP/RepVGG inside follow the config.
        self.conv1 = ConvNormLayer(2 * width, 2 * width, 1, act=act, eps=eps)
        self.csp_rep1 = CSPRepLayer(width, hidden, num_blocks, csp_act, eps)
        self.conv2 = ConvNormLayer(hidden, hidden, 3, act=act, eps=eps)
        self.csp_rep2 = CSPRepLayer(hidden, hidden, num_blocks, csp_act, eps)
        self.conv3 = ConvNormLayer(hidden, hidden, 3, act=act, eps=eps)
        self.conv4 = ConvNormLayer(2 * width + 2 * hidden, width, 1, act=act, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        first, second = self.conv1(x).split((self.split, self.split), dim=1)
        branch1 = self.conv2(self.csp_rep1(second))
        branch2 = self.conv3(self.csp_rep2(branch1))
        return self.conv4(torch.cat([first, second, branch1, branch2], dim=1))


class SCDown(nn.Module):
    """Spatial-channel downsampling: 1×1 conv then a depthwise 3×3 stride-2 conv, both without activation."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.conv1 = ConvNormLayer(channels, channels, 1, eps=eps)
        self.conv2 = ConvNormLayer(channels, channels, 3, stride=2, groups=channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))


class MLP(nn.Module):
    """Linear layers with an activation between them (not after the last)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, act: str = "relu") -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = activation(act)

    def forward(self, x: Tensor) -> Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = self.act(x)
        return x


class MultiHeadSelfAttention(nn.Module):
    """Multi-head attention with separate q/k/v/o projections; the position embedding goes into q and k only.

    Uses ``scaled_dot_product_attention`` (fused kernels on every device) instead of an explicit softmax.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.o_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, pos: Tensor | None = None, attn_mask: Tensor | None = None) -> Tensor:
        """x: (B, N, dim); pos: (B or 1, N, dim); attn_mask: additive (N, N) or boolean (True = may attend)."""
        batch, length, dim = x.shape
        qk_input = x if pos is None else x + pos
        q = self.q_proj(qk_input).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(qk_input).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, dim))


class Gate(nn.Module):
    """D-FINE's gated fusion replacing add-and-norm after cross-attention: LN(g1·x + g2·y), [g1, g2] = σ(W[x, y])."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.gate = nn.Linear(2 * dim, 2 * dim)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, residual: Tensor, x: Tensor) -> Tensor:
        gate_residual, gate_x = torch.sigmoid(self.gate(torch.cat([residual, x], dim=-1))).chunk(2, dim=-1)
        return self.norm(gate_residual * residual + gate_x * x)
