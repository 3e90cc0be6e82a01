"""Re-parameterisation for inference: batch norm folded into convolutions, RepVGG branches merged.

Every training-form ``conv -> BN -> act`` unit of the network becomes one :class:`FusedConv` (a biased convolution
followed by an in-place activation), so that inference runs one convolution kernel and at most one element-wise
pass per unit instead of three or four:

* backbone ``HGConvLayer`` (conv, frozen or trainable BN, ReLU, learnable affine block "LAB");
* encoder ``ConvNormLayer`` (conv, BN, optional SiLU);
* ``RepVggBlock``: act(BN(conv3×3(x)) + BN(conv1×1(x))) -> act(conv3×3'(x)), the 1×1 kernel added to the centre
  tap of the 3×3 one (the branches are linear up to the sum, so this is exact up to rounding);
* the ``Sequential(Conv2d, BatchNorm2d)`` input projections.

The LAB, ``y = a · relu(z) + c``, also folds away: for a > 0 it equals ``max(a·z + c, c)``, for a < 0
``min(a·z + c, c)``, and ``a·z + c`` is just another convolution. So a LAB layer costs one clamp, like a ReLU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfine.model.backbone import HGConvLayer, LearnableAffineBlock
from dfine.model.layers import ConvNormLayer, FrozenBatchNorm2d, RepVggBlock

__all__ = ["Clamp", "FusedConv", "fold_batch_norm", "fuse_convolutions", "merge_repvgg"]


class Clamp(nn.Module):
    """In-place ``clamp(min=low)`` or ``clamp(max=high)``: a ReLU with a learnt floor (or ceiling) after LAB folding."""

    def __init__(self, low: float | None = None, high: float | None = None) -> None:
        super().__init__()
        self.low = low
        self.high = high

    def forward(self, x: Tensor) -> Tensor:
        return x.clamp_(min=self.low, max=self.high)

    def extra_repr(self) -> str:
        return f"low={self.low}, high={self.high}"


class FusedConv(nn.Module):
    """A biased convolution followed by an (in-place) activation: the deploy form of conv -> BN -> act."""

    def __init__(self, conv: nn.Conv2d, activation: nn.Module | None = None) -> None:
        super().__init__()
        self.conv = conv
        self.activation = activation if activation is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.conv(x))


def _norm_scale_shift(norm: nn.Module) -> tuple[Tensor, Tensor]:
    """Per-channel (scale, shift) such that ``norm(x) = x · scale + shift`` in eval mode, in float64."""
    if isinstance(norm, FrozenBatchNorm2d):
        weight, bias, eps = norm.weight, norm.bias, norm.eps
    elif isinstance(norm, nn.BatchNorm2d):
        channels = norm.running_mean.shape[0]
        weight = norm.weight if norm.affine else torch.ones(channels, device=norm.running_mean.device)
        bias = norm.bias if norm.affine else torch.zeros(channels, device=norm.running_mean.device)
        eps = norm.eps
    else:
        raise TypeError(f"cannot fold a {type(norm).__name__} into a convolution")
    # float64 so that folding adds no rounding beyond the final cast back to the weights' dtype
    scale = weight.double() * (norm.running_var.double() + eps).rsqrt()
    return scale, bias.double() - norm.running_mean.double() * scale


@torch.no_grad()
def fold_batch_norm(conv: nn.Conv2d, norm: nn.Module, out_scale: float = 1.0, out_shift: float = 0.0) -> nn.Conv2d:
    """A new biased ``Conv2d`` computing ``(norm(conv(x))) · out_scale + out_shift``.

    Args:
        conv: the convolution (with or without bias).
        norm: ``nn.BatchNorm2d`` or ``FrozenBatchNorm2d`` in eval mode (running statistics are used).
        out_scale, out_shift: an extra affine map applied after the norm (used to fold a LAB).
    """
    scale, shift = _norm_scale_shift(norm)
    weight = conv.weight.double() * scale.reshape(-1, 1, 1, 1)
    bias = shift if conv.bias is None else shift + conv.bias.double() * scale
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
                      device=conv.weight.device, dtype=conv.weight.dtype)
    fused.weight.copy_(weight * out_scale)
    fused.bias.copy_(bias * out_scale + out_shift)
    return fused


@torch.no_grad()
def merge_repvgg(block: RepVggBlock) -> FusedConv:
    """One 3×3 convolution equal to the sum of the block's 3×3 and 1×1 conv-BN branches, plus its activation."""
    three = fold_batch_norm(block.conv1.conv, block.conv1.norm)
    one = fold_batch_norm(block.conv2.conv, block.conv2.norm)
    if three.kernel_size != (3, 3) or one.kernel_size != (1, 1) or three.padding != (1, 1) or one.padding != (0, 0):
        raise ValueError("RepVGG merging expects a padded 3×3 branch and an unpadded 1×1 branch")
    three.weight.add_(F.pad(one.weight, (1, 1, 1, 1)))
    three.bias.add_(one.bias)
    return FusedConv(three, _inplace(block.activation))


def _inplace(activation: nn.Module) -> nn.Module:
    """The same activation, computed in place (the convolution output it reads is a fresh tensor)."""
    if isinstance(activation, nn.ReLU):
        return nn.ReLU(inplace=True)
    if isinstance(activation, nn.SiLU):
        return nn.SiLU(inplace=True)
    return activation


@torch.no_grad()
def _fuse_hg_layer(layer: HGConvLayer) -> FusedConv:
    """Backbone conv unit: conv -> BN -> (ReLU) -> (LAB) as one conv plus one clamp (see the module docstring)."""
    has_act = not isinstance(layer.activation, nn.Identity)
    if isinstance(layer.lab, LearnableAffineBlock):
        if not isinstance(layer.activation, nn.ReLU):
            # a LAB after another activation does not fold; keep it as a separate module
            conv = fold_batch_norm(layer.convolution, layer.normalization)
            return FusedConv(conv, nn.Sequential(_inplace(layer.activation), layer.lab))
        a = float(layer.lab.scale.reshape(-1)[0])
        c = float(layer.lab.bias.reshape(-1)[0])
        conv = fold_batch_norm(layer.convolution, layer.normalization, out_scale=a, out_shift=c)
        return FusedConv(conv, Clamp(low=c) if a >= 0 else Clamp(high=c))
    conv = fold_batch_norm(layer.convolution, layer.normalization)
    return FusedConv(conv, _inplace(layer.activation) if has_act else None)


def _is_conv_bn(module: nn.Module) -> bool:
    return (isinstance(module, nn.Sequential) and len(module) == 2 and isinstance(module[0], nn.Conv2d)
            and isinstance(module[1], nn.BatchNorm2d | FrozenBatchNorm2d))


@torch.no_grad()
def fuse_convolutions(module: nn.Module) -> nn.Module:
    """Replace, recursively and in place, every foldable conv unit of ``module`` by a :class:`FusedConv`.

    ``module`` must be in eval mode (batch norms use their running statistics). Returns ``module``.
    """
    for name, child in module.named_children():
        if isinstance(child, RepVggBlock):
            replacement: nn.Module | None = merge_repvgg(child)
        elif isinstance(child, HGConvLayer):
            replacement = _fuse_hg_layer(child)
        elif isinstance(child, ConvNormLayer):
            replacement = FusedConv(fold_batch_norm(child.conv, child.norm), _inplace(child.activation))
        elif _is_conv_bn(child):
            replacement = FusedConv(fold_batch_norm(child[0], child[1]))
        else:
            replacement = None
            fuse_convolutions(child)
        if replacement is not None:
            setattr(module, name, replacement)
    return module
