"""Multi-scale deformable attention core, D-FINE variant (the original repository's
``src/zoo/dfine/utils.py: deformable_attention_core_func_v2``).

D-FINE samples a different number of points on each level (e.g. 3/6/3) and has no value or output projection.
"default" samples bilinearly with ``grid_sample``; "discrete" takes the nearest cell (a gather), which some
deployment targets prefer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def deformable_attention_core(
    value: Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: Tensor,
    attention_weights: Tensor,
    num_points_list: list[int],
    method: str = "default",
) -> Tensor:
    """Weighted sum of values sampled at per-head, per-point locations.

    Args:
        value: (B, S, M, D) flattened multi-level memory split into M heads of width D (S = Σ H_l·W_l).
        spatial_shapes: [(H_l, W_l)] per level, as Python ints.
        sampling_locations: (B, Q, M, P, 2) normalised (x, y) in [0, 1], points ordered level-major.
        attention_weights: (B, Q, M, P), already softmax-normalised over all P points.
        num_points_list: points per level, summing to P.
        method: "default" (bilinear) or "discrete" (nearest cell).

    Returns:
        (B, Q, M·D)
    """
    batch, _, heads, head_dim = value.shape
    num_queries = sampling_locations.shape[1]
    # (B, S, M, D) -> (B·M, D, S), then one (B·M, D, H, W) map per level
    value = value.permute(0, 2, 3, 1).flatten(0, 1)
    value_levels = value.split([h * w for h, w in spatial_shapes], dim=-1)
    # (B, Q, M, P, 2) -> (B·M, Q, P, 2), split per level along the points
    locations = sampling_locations.permute(0, 2, 1, 3, 4).flatten(0, 1)
    location_levels = locations.split(num_points_list, dim=-2)

    value_levels = [v.reshape(batch * heads, head_dim, h, w) for v, (h, w) in zip(value_levels, spatial_shapes)]
    scales = [torch.tensor([w, h], device=locations.device, dtype=locations.dtype) for h, w in spatial_shapes] \
        if method != "default" else [None] * len(spatial_shapes)
    # (B, Q, M, P) -> (B·M, 1, Q, P)
    weights = attention_weights.permute(0, 2, 1, 3).reshape(batch * heads, 1, num_queries, -1)
    out = sample_levels(value_levels, location_levels, weights, method, scales)  # (B·M, D, Q)
    return out.view(batch, heads * head_dim, num_queries).transpose(1, 2)


def grid_sample_layout(value: Tensor) -> Tensor:
    """``value`` laid out so that ``F.grid_sample`` reads it correctly.

    PyTorch's CPU kernel returns garbage (NaN, values near 1e38) for bfloat16 and float16 maps that are not
    contiguous, such as the per-level value maps, which are views of the flattened memory when the batch is 1 (seen
    with torch 2.14.1). Those are copied; everything else is returned as it is, so float32 and CUDA paths are
    unchanged.
    """
    if value.device.type == "cpu" and value.dtype in (torch.bfloat16, torch.float16) and not value.is_contiguous():
        return value.contiguous()
    return value


def sample_levels(value_levels: Sequence[Tensor], location_levels: Sequence[Tensor], weights: Tensor, method: str,
                  scales: Sequence[Tensor | None], per_level_sum: bool = False) -> Tensor:
    """Sample every level's value map at its points and sum the samples with the attention weights.

    Shared by :func:`deformable_attention_core` and the deploy head (:mod:`dfine.model.deploy.head`), which lays the
    value maps out once per forward instead of once per decoder layer.

    Args:
        value_levels: per level, (B·M, D, H_l, W_l).
        location_levels: per level, (B·M, Q, n_l, 2) normalised (x, y) in [0, 1].
        weights: (B·M, 1, Q, P) attention weights, points level-major.
        method: "default" (bilinear) or "discrete" (nearest cell).
        scales: per level, a (2,) tensor (W_l, H_l); used by "discrete" only.
        per_level_sum: weight and reduce each level's samples, then add the levels, instead of concatenating all
            samples and reducing once (the original's order of additions, kept by the training form). Equal to float
            rounding; PyTorch's CPU forward of this step is about twice as fast without the (B·M, D, Q, P) copy.

    Returns:
        (B·M, D, Q)
    """
    sampled = []
    for value, loc, scale in zip(value_levels, location_levels, scales):
        if method == "default":
            # grid_sample wants [-1, 1] coordinates; align_corners=False matches the cell-centre convention
            sampled.append(F.grid_sample(grid_sample_layout(value), 2 * loc - 1, mode="bilinear",
                                         padding_mode="zeros", align_corners=False))  # (B·M, D, Q, n_l)
        else:
            assert scale is not None
            sampled.append(_nearest_sample(value, loc, scale))
    if not per_level_sum:
        return (torch.cat(sampled, dim=-1) * weights).sum(-1)
    level_weights = weights.split([s.shape[-1] for s in sampled], dim=-1)
    out = (sampled[0] * level_weights[0]).sum(-1)
    for samples, level_weight in zip(sampled[1:], level_weights[1:]):
        out = out + (samples * level_weight).sum(-1)
    return out


def _nearest_sample(value: Tensor, locations: Tensor, scale: Tensor) -> Tensor:
    """The "discrete" sampling: value (B·M, D, H, W) at the nearest cells of locations (B·M, Q, n, 2)."""
    width, height = value.shape[-1], value.shape[-2]
    cell = (locations * scale + 0.5).to(torch.int64)
    x = cell[..., 0].clamp(0, width - 1)
    y = cell[..., 1].clamp(0, height - 1)
    index = (y * width + x).flatten(1)  # (B·M, Q·n)
    gathered = value.flatten(2).gather(2, index[:, None, :].expand(-1, value.shape[1], -1))
    return gathered.view(value.shape[0], value.shape[1], locations.shape[1], locations.shape[2])
