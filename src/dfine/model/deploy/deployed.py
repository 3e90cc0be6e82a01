"""The deploy form of D-FINE: a lean, inference-only copy of a trained model.

``deploy(model, image_size=640)`` (also ``model.deploy(...)``) returns a :class:`DeployedDFine` whose
``forward(pixel_values)`` gives the same ``logits`` / ``pred_boxes`` as the training-form model in eval mode (to
float rounding, ~1e-5), faster, and with a forward that is safe to capture:

* batch norms folded into their convolutions, RepVGG branches merged, LAB folded into a clamp
  (:mod:`dfine.model.deploy.fuse`), and a stem that never builds its largest temporary (:class:`DeployStem`);
* the AIFI position embedding, anchors, valid mask and FDR weighting W(n) precomputed for ``image_size``;
* the inference-only head of :mod:`dfine.model.deploy.head` (no denoising, no unused class/LQE heads);
* no host-device synchronisation and no tensor built from Python data inside ``forward`` (so CUDA-graph capture
  and ``torch.compile`` work), and plain tensors out (so ONNX export gives a clean graph).

The model is split into a ``body`` (backbone, projections, hybrid encoder: nearly all the FLOPs) and a ``head``
(query selection and decoder). :meth:`DeployedDFine.set_precision` can run the body in fp16/bf16 while the head
stays in fp32, which keeps top-k query selection and box decoding as precise as in fp32 at almost no cost.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfine.config.image_size import image_size_hw
from dfine.model.backbone import HGStem
from dfine.model.deploy.fuse import FusedConv, fuse_convolutions
from dfine.model.deploy.head import DeployHead, DetectionOutput
from dfine.model.depth import set_decoder_layers
from dfine.model.network import DFineNetwork

if TYPE_CHECKING:
    from dfine.model.detection import DFineForObjectDetection
from dfine.model.encoder import AIFILayer, sincos_position_embedding
from dfine.model.layers import RepNCSPELAN4

__all__ = ["DeployedDFine", "DetectionOutput", "deploy"]


class DeployAIFI(nn.Module):
    """AIFI with its 2-D sin-cos position embedding stored as a buffer for the export size."""

    def __init__(self, aifi: AIFILayer, height: int, width: int, device: torch.device) -> None:
        super().__init__()
        self.dim = aifi.dim
        self.temperature = aifi.temperature
        self.layers = aifi.layers
        self.size = (height, width)
        dtype = next(aifi.parameters()).dtype
        pos = sincos_position_embedding(height, width, self.dim, self.temperature, device, dtype)
        self.register_buffer("pos", pos.clone())

    def forward(self, feature_map: Tensor) -> Tensor:
        batch, _, height, width = feature_map.shape
        x = feature_map.flatten(2).transpose(1, 2)
        if (height, width) == self.size:
            pos = self.pos.to(x.dtype)
        else:  # another input size: eager only
            pos = sincos_position_embedding(height, width, self.dim, self.temperature, x.device, x.dtype)
        for layer in self.layers:
            x = layer(x, pos)
        # keep the layout of the input (channels-last input gives a channels-last view, no copy)
        out = x.transpose(1, 2).reshape(batch, self.dim, height, width)
        if feature_map.is_contiguous(memory_format=torch.channels_last):
            return out.contiguous(memory_format=torch.channels_last)
        return out.contiguous()


class ShiftMaxPool(nn.Module):
    """2×2 max-pool with stride 1 as maxima of shifted views (exactly equal to ``nn.MaxPool2d(2, 1)``).

    PyTorch's CPU max-pool kernel with stride 1 is several times slower than two element-wise maxima, and the
    stem runs it on the largest map of the network (stride 2, before any downsampling).
    """

    def forward(self, x: Tensor) -> Tensor:
        rows = torch.maximum(x[..., :, :-1], x[..., :, 1:])  # separable: max over columns, then over rows
        return torch.maximum(rows[..., :-1, :], rows[..., 1:, :])


class DeployStem(nn.Module):
    """The backbone stem (:class:`~dfine.model.backbone.HGStem`, already fused) without its largest temporaries.

    The stem works at stride 2, on the largest maps of the network, so at large batch its temporaries set the
    peak memory of the whole forward. The training form concatenates ``pool(x)`` and the conv branch and runs
    ``stem3`` on the result; ``stem3`` is linear in its input up to the activation, so here its kernel is split
    along the input channels and the two halves are convolved separately and summed (equal up to float
    rounding). The concatenated map is never built, and each map is released as soon as it has been used.
    """

    def __init__(self, stem: HGStem) -> None:
        super().__init__()
        if not all(isinstance(getattr(stem, name), FusedConv) for name in ("stem1", "stem2a", "stem2b", "stem3",
                                                                           "stem4")):
            raise TypeError("DeployStem needs a stem whose conv units are fused (see fuse_convolutions)")
        self.stem1, self.stem2a, self.stem2b, self.stem4 = stem.stem1, stem.stem2a, stem.stem2b, stem.stem4
        self.pool = ShiftMaxPool() if _is_2x2_stride_1(stem.pool) else stem.pool
        conv = stem.stem3.conv
        pooled_channels = stem.stem1.conv.out_channels
        self.stem3_pooled = _conv_like(conv, conv.weight[:, :pooled_channels], conv.bias)
        self.stem3_branch = _conv_like(conv, conv.weight[:, pooled_channels:], None)
        self.stem3_activation = stem.stem3.activation

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(self.stem1(x), (0, 1, 0, 1))
        half = F.pad(self.stem2a(x), (0, 1, 0, 1))  # half the channels of x
        y = self.stem3_pooled(self.pool(x))
        del x  # the full-width stride-2 maps are gone before the branch makes its own
        y = y + self.stem3_branch(self.stem2b(half))
        del half
        return self.stem4(self.stem3_activation(y))


def _is_2x2_stride_1(pool: nn.Module) -> bool:
    return isinstance(pool, nn.MaxPool2d) and pool.kernel_size in (2, (2, 2)) and pool.stride in (1, (1, 1)) \
        and pool.padding in (0, (0, 0))


def _conv_like(conv: nn.Conv2d, weight: Tensor, bias: Tensor | None) -> nn.Conv2d:
    """A convolution with ``conv``'s geometry and the given (sliced) weight and bias."""
    new = nn.Conv2d(weight.shape[1] * conv.groups, weight.shape[0], conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, bias=bias is not None, padding_mode=conv.padding_mode,
                    device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return new


class DeployELAN(nn.Module):
    """The CCFF's GELAN block (:class:`~dfine.model.layers.RepNCSPELAN4`, already fused) with its first 1×1
    convolution split in two by output channels, instead of its output split in two along the channels.

    The same numbers. ONNX Runtime's CPU convolutions work in a blocked channel layout (NCHWc) that a channel
    split cannot stay in, so in the exported graph each split, and the concatenation that takes its halves,
    converted maps to the plain layout and back: for D-FINE-X at 640 about 25 ms of a 770 ms forward.
    """

    def __init__(self, block: RepNCSPELAN4) -> None:
        super().__init__()
        if not isinstance(block.conv1, FusedConv):
            raise TypeError("DeployELAN needs a block whose conv units are fused (see fuse_convolutions)")
        conv, half = block.conv1.conv, block.split
        self.conv1_first = FusedConv(_conv_like(conv, conv.weight[:half], conv.bias[:half]), block.conv1.activation)
        self.conv1_second = FusedConv(_conv_like(conv, conv.weight[half:], conv.bias[half:]),
                                      block.conv1.activation)
        self.csp_rep1, self.conv2, self.csp_rep2 = block.csp_rep1, block.conv2, block.csp_rep2
        self.conv3, self.conv4 = block.conv3, block.conv4

    def forward(self, x: Tensor) -> Tensor:
        first, second = self.conv1_first(x), self.conv1_second(x)
        branch1 = self.conv2(self.csp_rep1(second))
        branch2 = self.conv3(self.csp_rep2(branch1))
        return self.conv4(torch.cat([first, second, branch1, branch2], dim=1))


class DeployBody(nn.Module):
    """Backbone, input projections, hybrid encoder and decoder input projections: pixels -> per-level maps."""

    def __init__(self, model: DFineNetwork, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.num_feature_levels = model.config.num_feature_levels
        self.backbone = fuse_convolutions(model.backbone)
        self.backbone.model.embedder = DeployStem(self.backbone.model.embedder)
        self.encoder_input_proj = fuse_convolutions(model.encoder_input_proj)
        self.encoder = fuse_convolutions(model.encoder)
        for blocks in (self.encoder.fpn_blocks, self.encoder.pan_blocks):
            for i, block in enumerate(blocks):
                blocks[i] = DeployELAN(block)
        self.decoder_input_proj = fuse_convolutions(model.decoder_input_proj)
        strides = model.config.feat_strides
        device = model.enc_score_head.weight.device
        for i, level in enumerate(self.encoder.encode_proj_layers):
            stride = strides[level]
            self.encoder.aifi[i] = DeployAIFI(self.encoder.aifi[i], image_size[0] // stride,
                                              image_size[1] // stride, device)

    def forward(self, pixel_values: Tensor) -> list[Tensor]:
        features = self.backbone(pixel_values)
        maps = self.encoder([proj(f) for proj, f in zip(self.encoder_input_proj, features)])
        sources = [proj(m) for proj, m in zip(self.decoder_input_proj, maps)]
        for level in range(len(sources), self.num_feature_levels):  # extra levels (no released preset has them)
            sources.append(self.decoder_input_proj[level](maps[-1] if level == len(maps) else sources[-1]))
        return sources


class DeployedDFine(nn.Module):
    """Inference-only D-FINE: ``forward(pixel_values (B, 3, H, W) in [0, 1])`` -> :class:`DetectionOutput`.

    Build it with :func:`deploy`. ``config`` is the source model's configuration (class names etc.).
    """

    def __init__(self, model: DFineForObjectDetection, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.config = model.config
        self.image_size = image_size
        network = model.model
        self.body = DeployBody(network, image_size)
        shapes = self._spatial_shapes(image_size)
        self.head = DeployHead(network, shapes)
        self.channels_last = False

    def _spatial_shapes(self, image_size: tuple[int, int]) -> tuple[tuple[int, int], ...]:
        strides = list(self.config.feat_strides)
        while len(strides) < self.config.num_feature_levels:  # extra levels halve the coarsest
            strides.append(strides[-1] * 2)
        return tuple((image_size[0] // s, image_size[1] // s) for s in strides[: self.config.num_feature_levels])

    @property
    def body_dtype(self) -> torch.dtype:
        return next(self.body.parameters()).dtype

    @property
    def head_dtype(self) -> torch.dtype:
        return self.head.enc_score_head.weight.dtype

    def set_precision(self, dtype: torch.dtype, head_dtype: torch.dtype | None = torch.float32) -> DeployedDFine:
        """Run the body in ``dtype`` and the head in ``head_dtype`` (None: also ``dtype``). Returns self.

        Keeping the head in float32 (the default) costs little — it holds a few percent of the FLOPs — and keeps
        the top-300 query selection and the box decoding as precise as in a float32 model.
        """
        self.body.to(dtype)
        self.head.to(dtype if head_dtype is None else head_dtype)
        return self

    def set_uncertainty(self, enabled: bool = True) -> DeployedDFine:
        """Also return each box edge's spread (:class:`~dfine.model.deploy.head.DetectionWithUncertainty`), as the
        training form does with ``output_uncertainty=True``; detections are unchanged. Returns self."""
        self.head.output_uncertainty = bool(enabled)
        return self

    def use_max_pool_op(self) -> DeployedDFine:
        """Pool the stem with ``nn.MaxPool2d`` rather than shifted maxima. Returns self.

        The shifted maxima are faster in PyTorch on the CPU, but in an exported graph they become four ``Slice``
        copies of the largest map plus two ``Max``, while ONNX Runtime and TensorRT run ``MaxPool`` natively
        (ONNX Runtime on the CPU: ~10 ms less for D-FINE-L). Exporters call this; the outputs are identical.
        """
        stem = self.body.backbone.model.embedder
        if isinstance(stem.pool, ShiftMaxPool):
            stem.pool = nn.MaxPool2d(kernel_size=2, stride=1)
        return self

    def to_channels_last(self, enabled: bool = True) -> DeployedDFine:
        """Keep the body's activations in NHWC layout (faster convolutions on most GPUs and on x86). Returns self."""
        self.body.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)
        self.channels_last = enabled
        return self

    def forward(self, pixel_values: Tensor) -> DetectionOutput:
        pixel_values = pixel_values.to(self.body_dtype)
        if self.channels_last:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        return self.head(self.body(pixel_values))


@torch.no_grad()
def deploy(model: DFineForObjectDetection, image_size: int | Sequence[int] | None = None,
           decoder_layers: int | None = None) -> DeployedDFine:
    """An inference-only copy of ``model`` in deploy form (``model`` itself is not changed).

    Args:
        model: a :class:`~dfine.model.DFineForObjectDetection` (any mode; the copy is put in eval mode).
        image_size: the input size the buffers are precomputed for, ``640`` or ``(H, W)``; default: the config's
            ``anchor_image_size``, ``eval_size`` or ``training_image_size`` if set, else 640. Other sizes still run in
            eager mode.
        decoder_layers: run only this many decoder layers and return the last one's detections (default: the
            model's own choice, every layer); see :mod:`dfine.model.depth`.

    Returns:
        A :class:`DeployedDFine` in eval mode, on the model's device and in its dtype (use
        :meth:`DeployedDFine.set_precision` to change it: folding is done in float64 whatever the dtype).
    """
    # the detection class sits above this module (its deploy() method calls this function): its network is checked
    if not isinstance(getattr(model, "model", None), DFineNetwork) or isinstance(model, DFineNetwork):
        raise TypeError(f"deploy() needs a DFineForObjectDetection, got {type(model).__name__}")
    if image_size is None:
        config = model.config
        image_size = config.anchor_image_size or config.eval_size or config.training_image_size or 640
    size = image_size_hw(image_size)
    source = copy.deepcopy(model).eval()
    if decoder_layers is not None:
        set_decoder_layers(source, decoder_layers)  # the head keeps the layers up to the decoder's eval_idx
    return DeployedDFine(source, size).eval()
