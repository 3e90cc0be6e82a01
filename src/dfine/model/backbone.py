"""HGNetv2 backbone (the original repository's ``src/nn/backbone/hgnetv2.py: HGNetv2``; timm's ``hgnet.py``
implements the same network).

Stem (stride 4) followed by four stages of HG blocks. An HG block runs a chain of convolutions, concatenates the
block input with every intermediate output, and squeezes the result with two 1×1 convolutions; blocks after the
first in a stage are residual. Variants B0–B6 differ only in widths and depths (``dfine.config.presets``).

Module names (``embedder.stem1.convolution`` …) follow the Hugging Face checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfine.config import HGNetV2Config
from dfine.model.layers import activation, freeze_batch_norms


class LearnableAffineBlock(nn.Module):
    """y = scale · x + bias with two scalars (the "LAB" of the N/S/M backbones)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * x + self.bias


class HGConvLayer(nn.Module):
    """Conv (no bias) -> BN -> activation -> LAB; LAB only where there is an activation and the variant uses it."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 act: str | None = "relu", use_lab: bool = False) -> None:
        super().__init__()
        self.convolution = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=(kernel_size - 1) // 2,
                                     groups=groups, bias=False)
        self.normalization = nn.BatchNorm2d(out_channels)
        self.activation = activation(act)
        self.lab = LearnableAffineBlock() if act is not None and use_lab else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.lab(self.activation(self.normalization(self.convolution(x))))


class HGConvLayerLight(nn.Module):
    """1×1 conv without activation, then a depthwise k×k conv with activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, act: str, use_lab: bool) -> None:
        super().__init__()
        self.conv1 = HGConvLayer(in_channels, out_channels, 1, act=None, use_lab=use_lab)
        self.conv2 = HGConvLayer(out_channels, out_channels, kernel_size, groups=out_channels, act=act,
                                 use_lab=use_lab)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))


class HGStem(nn.Module):
    """Stride-4 stem: 3×3/2 conv, a two-branch (2×2 convs | 2×2 max-pool) mix, 3×3/2 conv, 1×1 conv."""

    def __init__(self, channels: list[int], strides: list[int], act: str, use_lab: bool) -> None:
        super().__init__()
        c_in, c_mid, c_out = channels
        self.stem1 = HGConvLayer(c_in, c_mid, 3, strides[0], act=act, use_lab=use_lab)
        self.stem2a = HGConvLayer(c_mid, c_mid // 2, 2, strides[1], act=act, use_lab=use_lab)
        self.stem2b = HGConvLayer(c_mid // 2, c_mid, 2, strides[2], act=act, use_lab=use_lab)
        self.stem3 = HGConvLayer(2 * c_mid, c_mid, 3, strides[3], act=act, use_lab=use_lab)
        self.stem4 = HGConvLayer(c_mid, c_out, 1, strides[4], act=act, use_lab=use_lab)
        # The original asks for ceil_mode=True, which with stride 1 changes nothing; leaving it off avoids the
        # ceil-mode ONNX export failure users of the original hit (its issues #13, #45, #260).
        self.pool = nn.MaxPool2d(kernel_size=2, stride=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(self.stem1(x), (0, 1, 0, 1))
        branch = self.stem2b(F.pad(self.stem2a(x), (0, 1, 0, 1)))
        pooled = self.pool(x)
        return self.stem4(self.stem3(torch.cat([pooled, branch], dim=1)))


class HGBlock(nn.Module):
    """A chain of ``num_layers`` convs whose outputs, with the input, are concatenated and squeezed by two 1×1s."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, num_layers: int, kernel_size: int,
                 residual: bool, light: bool, act: str, use_lab: bool) -> None:
        super().__init__()
        self.residual = residual
        layers = []
        for i in range(num_layers):
            c_in = in_channels if i == 0 else mid_channels
            if light:
                layers.append(HGConvLayerLight(c_in, mid_channels, kernel_size, act, use_lab))
            else:
                layers.append(HGConvLayer(c_in, mid_channels, kernel_size, act=act, use_lab=use_lab))
        self.layers = nn.ModuleList(layers)
        total = in_channels + num_layers * mid_channels
        self.aggregation = nn.Sequential(
            HGConvLayer(total, out_channels // 2, 1, act=act, use_lab=use_lab),
            HGConvLayer(out_channels // 2, out_channels, 1, act=act, use_lab=use_lab),
        )

    def forward(self, x: Tensor) -> Tensor:
        outputs = [x]
        h = x
        for layer in self.layers:
            h = layer(h)
            outputs.append(h)
        h = self.aggregation(torch.cat(outputs, dim=1))
        return h + x if self.residual else h


class HGStage(nn.Module):
    def __init__(self, config: HGNetV2Config, index: int) -> None:
        super().__init__()
        c_in = config.stage_in_channels[index]
        c_mid = config.stage_mid_channels[index]
        c_out = config.stage_out_channels[index]
        act = config.hidden_act
        use_lab = config.use_learnable_affine_block
        if config.stage_downsample[index]:
            # Depthwise stride-2 conv with BN and no activation (and so no LAB).
            self.downsample: nn.Module = HGConvLayer(c_in, c_in, 3, config.stage_downsample_strides[index],
                                                     groups=c_in, act=None)
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.ModuleList(
            HGBlock(c_in if b == 0 else c_out, c_mid, c_out, config.stage_numb_of_layers[index],
                    config.stage_kernel_size[index], residual=b > 0, light=config.stage_light_block[index],
                    act=act, use_lab=use_lab)
            for b in range(config.stage_num_blocks[index])
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)
        for block in self.blocks:
            x = block(x)
        return x


class HGNetV2Encoder(nn.Module):
    def __init__(self, config: HGNetV2Config) -> None:
        super().__init__()
        self.stages = nn.ModuleList(HGStage(config, i) for i in range(len(config.stage_in_channels)))


class HGNetV2Backbone(nn.Module):
    """HGNetv2 returning the feature maps of ``config.out_indices`` (stem = 0, stage s = s), or of ``out_indices``
    when given (ascending; the mask branch of D-FINE-N-seg also takes stage 2)."""

    def __init__(self, config: HGNetV2Config, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        self.out_indices = list(config.out_indices if out_indices is None else out_indices)
        all_channels = [config.stem_channels[2], *config.stage_out_channels]
        self.channels = [all_channels[i] for i in self.out_indices]
        self.embedder = HGStem(config.stem_channels, config.stem_strides, config.hidden_act,
                               config.use_learnable_affine_block)
        self.encoder = HGNetV2Encoder(config)

    def forward(self, pixel_values: Tensor) -> list[Tensor]:
        x = self.embedder(pixel_values)
        features = [x] if 0 in self.out_indices else []
        last = max(self.out_indices)
        for index, stage in enumerate(self.encoder.stages, start=1):
            if index > last:  # stages after the last returned one are never needed
                break
            x = stage(x)
            if index in self.out_indices:
                features.append(x)
        return features


class DFineBackbone(nn.Module):
    """Holds the HGNetv2 under ``.model`` (the checkpoints' ``model.backbone.model.*`` prefix)."""

    def __init__(self, config: HGNetV2Config, freeze_batch_norm: bool,
                 out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        self.model = HGNetV2Backbone(config, out_indices)
        if freeze_batch_norm:
            freeze_batch_norms(self.model)
        self.channels = self.model.channels

    def forward(self, pixel_values: Tensor) -> list[Tensor]:
        return self.model(pixel_values)
