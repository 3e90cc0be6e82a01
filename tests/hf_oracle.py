"""Helpers for tests that use Hugging Face transformers as an oracle (a test dependency only)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch import nn


def natural_images(count: int, size: int = 640, seed: int = 0) -> list[Image.Image]:
    """Structured test pictures: smooth gradients, textured background, coloured shapes (no network needed)."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        y, x = np.mgrid[0:size, 0:size] / size
        base = np.stack([np.sin(x * rng.uniform(2, 8) + rng.uniform(0, 6)),
                         np.cos(y * rng.uniform(2, 8) + rng.uniform(0, 6)),
                         np.sin((x + y) * rng.uniform(2, 8))], axis=-1)
        noise = rng.normal(0, 0.15, (size, size, 3))
        array = ((base * 0.3 + 0.5 + noise).clip(0, 1) * 255).astype(np.uint8)
        image = Image.fromarray(array)
        draw = ImageDraw.Draw(image)
        for _ in range(rng.integers(3, 8)):
            x0, y0 = rng.integers(0, size - 64, 2)
            w, h = rng.integers(32, size // 2, 2)
            colour = tuple(int(c) for c in rng.integers(0, 255, 3))
            shape = rng.integers(0, 3)
            box = [int(x0), int(y0), int(min(size - 1, x0 + w)), int(min(size - 1, y0 + h))]
            if shape == 0:
                draw.rectangle(box, fill=colour)
            elif shape == 1:
                draw.ellipse(box, fill=colour)
            else:
                draw.polygon([(box[0], box[3]), ((box[0] + box[2]) // 2, box[1]), (box[2], box[3])], fill=colour)
        images.append(image.filter(ImageFilter.GaussianBlur(1)))
    return images


def to_pixel_values(images: list[Image.Image], size: int = 640) -> torch.Tensor:
    arrays = [np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.float32) / 255
              for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def randomize_weights(model: nn.Module, seed: int = 0, scale: float = 0.02) -> None:
    """Perturb every floating parameter so that no head stays all zeros (zero-initialised layers included)."""
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith(("reg_scale", "up")) and param.numel() == 1:
            continue
        noise = torch.randn(param.shape, generator=generator) * scale
        if param.dim() > 1:
            fan_in = math.prod(param.shape[1:])
            noise = torch.randn(param.shape, generator=generator) / math.sqrt(fan_in)
        param.add_(noise.to(param.dtype))


@torch.no_grad()
def calibrate_batch_norms(model: nn.Module, pixel_values: torch.Tensor) -> None:
    """Set every batch norm's running statistics from the activations it sees on ``pixel_values``.

    Runs one eval forward with hooks that, just before each norm runs, set its mean/var to the per-channel
    statistics of its actual input, so the network's activations stay well scaled and depend on the image.
    """
    def hook(module, inputs):
        x = inputs[0]
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)) + 1e-3)

    handles = [m.register_forward_pre_hook(hook) for m in model.modules()
               if hasattr(m, "running_mean") and hasattr(m, "running_var")]
    was_training = model.training
    model.eval()
    try:
        model(pixel_values)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def hf_model_from_ours(config, directory: Path):
    """A transformers DFineForObjectDetection with random weights and our config (written to ``directory``)."""
    import transformers

    config.save_pretrained(directory)
    hf_config = transformers.DFineConfig.from_pretrained(directory)
    return transformers.DFineForObjectDetection(hf_config).eval()
