"""Deformable attention core: both sampling methods against explicit per-point references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dfine.ops.deform_attn import deformable_attention_core, grid_sample_layout, sample_levels

SHAPES = [(6, 8), (3, 4)]
POINTS = [2, 3]


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    batch, queries, heads, head_dim = 2, 5, 2, 4
    tokens = sum(h * w for h, w in SHAPES)
    value = torch.randn(batch, tokens, heads, head_dim, generator=generator, dtype=torch.float64)
    # a margin outside [0, 1] exercises the clamping (discrete) and the zero padding (bilinear)
    locations = torch.rand(batch, queries, heads, sum(POINTS), 2, generator=generator, dtype=torch.float64) * 1.2 - 0.1
    weights = torch.rand(batch, queries, heads, sum(POINTS), generator=generator, dtype=torch.float64).softmax(-1)
    return value, locations, weights


def _reference(value: torch.Tensor, locations: torch.Tensor, weights: torch.Tensor, method: str) -> torch.Tensor:
    """Point by point: the level of each point, its sample, the weighted sum per head."""
    batch, queries, heads, points, _ = locations.shape
    head_dim = value.shape[-1]
    starts = [0, SHAPES[0][0] * SHAPES[0][1]]
    level_of = [level for level, n in enumerate(POINTS) for _ in range(n)]
    out = torch.zeros(batch, queries, heads, head_dim, dtype=value.dtype)
    for b in range(batch):
        for m in range(heads):
            for p in range(points):
                level = level_of[p]
                height, width = SHAPES[level]
                grid = value[b, starts[level]:starts[level] + height * width, m].T.reshape(1, head_dim, height, width)
                for q in range(queries):
                    x, y = locations[b, q, m, p].tolist()
                    if method == "discrete":
                        col = min(max(int(x * width + 0.5), 0), width - 1)
                        row = min(max(int(y * height + 0.5), 0), height - 1)
                        sample = grid[0, :, row, col]
                    else:
                        point = torch.tensor([[[[2 * x - 1, 2 * y - 1]]]], dtype=value.dtype)
                        sample = F.grid_sample(grid, point, mode="bilinear", padding_mode="zeros",
                                               align_corners=False)[0, :, 0, 0]
                    out[b, q, m] += weights[b, q, m, p] * sample
    return out.reshape(batch, queries, heads * head_dim)


@pytest.mark.parametrize("method", ["default", "discrete"])
def test_core_equals_point_by_point_reference(method: str) -> None:
    value, locations, weights = _inputs()
    got = deformable_attention_core(value, SHAPES, locations, weights, POINTS, method=method)
    expected = _reference(value, locations, weights, method)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["default", "discrete"])
def test_per_level_sum_equals_concatenated_sum(method: str) -> None:
    """The deploy head's order of additions (per level, then across levels) gives the same attention output."""
    value, locations, weights = _inputs(seed=1)
    batch, queries, heads, points, _ = locations.shape
    value = value.permute(0, 2, 3, 1).flatten(0, 1)
    value_levels = [v.reshape(batch * heads, -1, h, w)
                    for v, (h, w) in zip(value.split([h * w for h, w in SHAPES], dim=-1), SHAPES)]
    location_levels = locations.permute(0, 2, 1, 3, 4).flatten(0, 1).split(POINTS, dim=-2)
    flat_weights = weights.permute(0, 2, 1, 3).reshape(batch * heads, 1, queries, points)
    scales = [torch.tensor([w, h], dtype=value.dtype) for h, w in SHAPES]
    concatenated = sample_levels(value_levels, location_levels, flat_weights, method, scales)
    per_level = sample_levels(value_levels, location_levels, flat_weights, method, scales, per_level_sum=True)
    assert per_level.shape == concatenated.shape == (batch * heads, value.shape[1], queries)
    assert concatenated.abs().max() > 0.1  # the samples are not all padding
    torch.testing.assert_close(per_level, concatenated, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_maps_that_are_views_sample_correctly_on_the_cpu(dtype: torch.dtype) -> None:
    """At batch 1 the per-level value maps are views of the flattened memory (channel stride 1); PyTorch's CPU
    grid_sample returns NaN or ~1e38 for such maps in bf16/fp16 (torch 2.14.1), which turned every detection of a
    bf16 head into NaN. sample_levels must agree with float32 on them."""
    torch.manual_seed(0)
    heads, head_dim, shapes = 8, 16, [(20, 20), (10, 10)]
    memory = torch.randn(1, sum(h * w for h, w in shapes), heads * head_dim)
    value = memory.view(1, -1, heads, head_dim).permute(0, 2, 3, 1).reshape(heads, head_dim, -1)  # a view
    levels = [v.view(heads, head_dim, h, w) for v, (h, w) in zip(value.split([h * w for h, w in shapes], -1), shapes)]
    assert not levels[0].is_contiguous()
    locations = [torch.rand(heads, 30, 3, 2) for _ in shapes]
    weights = torch.rand(heads, 1, 30, 6).softmax(-1)
    levels, locations, weights = ([t.to(dtype) for t in levels], [t.to(dtype) for t in locations],
                                  weights.to(dtype))
    # the same maps laid out contiguously are read correctly: the views must give exactly that (grid_sample computes
    # its coordinates in the maps' precision, so float32 is only a loose reference)
    reference = sample_levels([v.contiguous() for v in levels], locations, weights, "default", [None, None])
    low = sample_levels(levels, locations, weights, "default", [None, None])
    assert torch.isfinite(low).all() and torch.equal(low, reference)
    as_float32 = sample_levels([v.float() for v in levels], [loc.float() for loc in locations], weights.float(),
                               "default", [None, None])
    torch.testing.assert_close(low.float(), as_float32, atol=0.1, rtol=0.1)
    # float32 and contiguous maps are passed through untouched
    as_float = levels[0].float()
    assert grid_sample_layout(as_float) is as_float
    contiguous = levels[0].contiguous()
    assert grid_sample_layout(contiguous) is contiguous
