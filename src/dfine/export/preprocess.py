"""A model's own preprocessing, carried into its exported graph.

An exported graph always takes ``images`` as RGB in [0, 1] (8-bit values / 255) at the export size, so that a runtime
needs nothing but the file. The released checkpoints feed the model exactly that (no normalisation), and their
graphs get nothing extra. A model whose ``preprocessor_config.json`` rescales by another factor or normalises with a
mean and std gets one multiply-add per channel at the graph's input, computing what its processor would have fed the
model. The resampling filter cannot live in the graph: it goes into the metadata, which :mod:`dfine.runtime.onnx` reads.

A processor that pads after resizing (``do_pad`` to a ``pad_size`` larger than the export size) puts the picture in
a corner of a bigger canvas; the exported graph and its box scaling assume the picture fills the input, so such a
model is refused rather than exported wrong.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from dfine.errors import DFineError

if TYPE_CHECKING:
    from dfine.processing.processor import DFineImageProcessor



def input_affine(processor: DFineImageProcessor) -> tuple[list[float], list[float]] | None:
    """Per-channel ``(scale, shift)`` turning [0, 1] images into what ``processor`` feeds the model, or None when
    that is the identity (the released checkpoints: rescale by 1/255, no normalisation)."""
    factor = processor.rescale_factor * 255.0 if processor.do_rescale else 255.0
    scale, shift = [factor] * 3, [0.0] * 3
    if processor.do_normalize:
        scale = [factor / std for std in processor.image_std]
        shift = [-mean / std for mean, std in zip(processor.image_mean, processor.image_std)]
    if all(abs(s - 1.0) < 1e-9 for s in scale) and not any(shift):
        return None
    return scale, shift


def check_exportable(processor: DFineImageProcessor, size: tuple[int, int], model_name: str) -> None:
    """Raise a one-line :class:`DFineError` when ``processor`` does something the exported graph cannot."""
    if processor.do_pad and processor.pad_size is not None:
        padded = (processor.pad_size["height"], processor.pad_size["width"])
        if padded != tuple(size):
            raise DFineError(f"{model_name}: its processor pads images to {padded[0]}x{padded[1]} after resizing, "
                             f"which an exported graph of {size[0]}x{size[1]} cannot reproduce; export with "
                             f"--image-size {padded[0]} if the model was trained on the padded size")


class InputAffine(nn.Module):
    """``images * scale + shift`` per channel: the model's normalisation at the input of an exported graph."""

    def __init__(self, scale: list[float], shift: list[float]) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("shift", torch.tensor(shift, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        return images * self.scale.to(images.dtype) + self.shift.to(images.dtype)


def graph_processor(processor: DFineImageProcessor, size: tuple[int, int]) -> DFineImageProcessor:
    """The processor of the graph's own input: ``processor``'s resampling at ``size``, then v / 255, nothing else
    (what :func:`dfine.runtime.onnx.preprocess` computes)."""
    from dfine.processing.processor import DFineImageProcessor

    return DFineImageProcessor(size={"height": size[0], "width": size[1]}, resample=processor.resample)
