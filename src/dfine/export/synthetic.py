"""Random but well-conditioned weights, for benchmarks and precision checks where no checkpoint can be downloaded.

Randomly initialised deep networks whose batch norms are calibrated to unit variance are *chaotic*: a relative
perturbation of 1e-6 at the input changes the backbone output by 1e-3 and reorders the detections. Any comparison
between two correct implementations (fp16 vs fp32, ONNX Runtime vs PyTorch) then fails for the wrong reason. A
trained network is not like that. :func:`synthetic_detector` builds weights that behave like a trained one in
this respect, at no cost:

* He-normal convolutions with gain 1 and batch norms that only remove each channel's mean (contracting, so
  rounding errors shrink with depth instead of growing);
* the encoder input projections calibrated to unit variance (so the encoder and head see informative features);
* random decoder and head weights, with the encoder score head and the final class head centred on their inputs
  (so scores and labels differ between queries and images, as for a real detector).

Measured at 320×320, fp32 with fp16-rounded inputs vs fp32 keeps ≥ 99 % of the top-100 detections within one pixel
for every size, where the usual random initialisation keeps almost none.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dfine.export.verify import check_images

__all__ = ["calibration_pixels", "synthetic_detector"]


def calibration_pixels(image_size: int, count: int = 2, seed: int = 0) -> torch.Tensor:
    """Structured test pictures as (count, 3, S, S) pixel values (the processor's preprocessing)."""
    from dfine.processing.processor import DFineImageProcessor

    pictures = check_images([(image_size + 37 * i, image_size - 21 * i) for i in range(count)], seed=seed)
    return DFineImageProcessor(size=image_size)(pictures)["pixel_values"]


def _calibration_hooks(model: nn.Module, generator: torch.Generator) -> list:
    """Forward pre-hooks that set each module's statistics from the input it actually receives.

    Pre-hooks run just before their module, so one forward pass calibrates every layer in order: each sees the
    activations of the already-calibrated layers before it.
    """

    def batch_norm(full: bool):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].float()
            module.running_mean.copy_(x.mean(dim=(0, 2, 3)))  # type: ignore[operator]
            if full:
                module.running_var.copy_(x.var(dim=(0, 2, 3)) + 1e-3)  # type: ignore[operator]
        return hook

    def centre(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        flat = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float()
        module.weight.div_(flat.std(0).mean())
        noise = (torch.randn(module.bias.shape, generator=generator) * 0.1).to(module.bias.device)
        module.bias.copy_(-(module.weight @ flat.mean(0)) + noise - 2.0)

    decoder = model.model.decoder
    handles = [m.register_forward_pre_hook(batch_norm("input_proj" in n)) for n, m in model.named_modules()
               if hasattr(m, "running_var")]
    handles.append(model.model.enc_score_head.register_forward_pre_hook(centre))
    handles.append(decoder.class_embed[decoder.eval_idx].register_forward_pre_hook(centre))
    return handles


@torch.no_grad()
def synthetic_detector(preset: str = "dfine-s-coco", image_size: int = 320, seed: int = 0,
                       device: str | torch.device = "cpu") -> nn.Module:
    """A :class:`~dfine.model.DFineForObjectDetection` of ``preset``'s architecture with well-conditioned random
    weights (see the module docstring), in eval mode on ``device`` (the calibration passes run there).
    Deterministic for a given seed (up to the device's rounding in the calibration)."""
    from dfine.config import DFineConfig
    from dfine.model import DFineForObjectDetection

    generator = torch.Generator().manual_seed(seed)
    model = DFineForObjectDetection(DFineConfig.from_preset(preset)).eval()
    body = ("model.backbone", "model.encoder.", "model.encoder_input_proj")
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            fan_in = module.weight[0].numel()
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * math.sqrt(1.0 / fan_in))
    # (weights are drawn on the CPU generator before any move, so every device gets the same values)
    for name, param in model.named_parameters():
        if name.startswith(body) or name.endswith(("reg_scale", "up")):
            continue
        if param.dim() > 1:
            param.copy_(torch.randn(param.shape, generator=generator) / math.sqrt(param.shape[1]))
        elif "norm" not in name:
            param.add_(torch.randn(param.shape, generator=generator) * 0.1)
    model.to(device)
    pixels = calibration_pixels(image_size, seed=seed).to(device)
    handles = _calibration_hooks(model, generator)
    try:
        model(pixels)
    finally:
        for handle in handles:
            handle.remove()
    return model
