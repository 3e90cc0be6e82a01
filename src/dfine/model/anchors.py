"""Anchor grid for two-stage query selection (the original repository's
``src/zoo/dfine/dfine_decoder.py: DFINETransformer._generate_anchors``).

One anchor per cell of every level: centre of the cell, width and height ``0.05 · 2^level``; anchors with any
coordinate outside (0.01, 0.99) are invalid. Anchors are returned in logit space; invalid ones are set to the
dtype's largest value (the original uses +inf, which breaks fp16 and TensorRT), and their memory is zeroed.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor


@functools.lru_cache(maxsize=32)
def generate_anchors(spatial_shapes: tuple[tuple[int, int], ...], grid_size: float = 0.05,
                     device: torch.device = torch.device("cpu"),
                     dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """(1, S, 4) anchor logits and (1, S, 1) valid mask for the given level shapes ``((H_l, W_l), ...)``."""
    anchors = []
    for level, (height, width) in enumerate(spatial_shapes):
        grid_y, grid_x = torch.meshgrid(torch.arange(height, dtype=torch.float32, device=device),
                                        torch.arange(width, dtype=torch.float32, device=device), indexing="ij")
        centre = torch.stack([(grid_x + 0.5) / width, (grid_y + 0.5) / height], dim=-1)
        size = torch.full_like(centre, grid_size * 2.0**level)
        anchors.append(torch.cat([centre, size], dim=-1).reshape(1, height * width, 4))
    all_anchors = torch.cat(anchors, dim=1).to(dtype)
    eps = 1e-2
    valid = ((all_anchors > eps) & (all_anchors < 1 - eps)).all(dim=-1, keepdim=True)
    logits = torch.log(all_anchors / (1 - all_anchors))
    logits = torch.where(valid, logits, torch.full_like(logits, torch.finfo(dtype).max))
    return logits, valid
