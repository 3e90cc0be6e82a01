"""Multi-scale deformable attention core, D-FINE variant (SPEC Part A §3.10).

D-FINE samples a different number of points on each level (e.g. 3/6/3) and has no value or output projection.
"default" samples bilinearly with ``grid_sample``; "discrete" takes the nearest cell (a gather), which some
deployment targets prefer.
"""

from __future__ import annotations

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

    sampled = []
    for (height, width), value_l, loc_l in zip(spatial_shapes, value_levels, location_levels):
        value_l = value_l.reshape(batch * heads, head_dim, height, width)
        if method == "default":
            # grid_sample wants [-1, 1] coordinates; align_corners=False matches the cell-centre convention
            sampled.append(F.grid_sample(value_l, 2 * loc_l - 1, mode="bilinear", padding_mode="zeros",
                                         align_corners=False))  # (B·M, D, Q, n_l)
        else:
            scale = torch.tensor([width, height], device=loc_l.device, dtype=loc_l.dtype)
            cell = (loc_l * scale + 0.5).to(torch.int64)
            x = cell[..., 0].clamp(0, width - 1)
            y = cell[..., 1].clamp(0, height - 1)
            index = (y * width + x).flatten(1)  # (B·M, Q·n_l)
            gathered = value_l.flatten(2).gather(2, index[:, None, :].expand(-1, head_dim, -1))
            sampled.append(gathered.reshape(batch * heads, head_dim, num_queries, -1))

    # (B, Q, M, P) -> (B·M, 1, Q, P)
    weights = attention_weights.permute(0, 2, 1, 3).reshape(batch * heads, 1, num_queries, -1)
    out = (torch.cat(sampled, dim=-1) * weights).sum(-1)  # (B·M, D, Q)
    return out.view(batch, heads * head_dim, num_queries).transpose(1, 2)
