"""Fine-grained Distribution Refinement maths (D-FINE paper, section "Fine-grained Distribution Refinement";
the original repository's ``src/zoo/dfine/dfine_utils.py``).

Each box edge is a distribution over ``N + 1`` bins. Bin ``n`` stands for the offset ``W(n)`` measured in units of
``w / reg_scale`` (or ``h / reg_scale``) of the reference box. ``W`` is non-uniform: fine near zero, coarse far out,
and its two end bins jump to ``±2 · up · reg_scale``.

Everything here is a pure function of tensors. ``weighting_function`` builds W with tensor arithmetic only (no
``.item()``), so a forward that rebuilds it stays free of host-device synchronisation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dfine.ops.boxes import box_xyxy_to_cxcywh


def weighting_function(max_num_bins: int, up: Tensor, reg_scale: Tensor | float) -> Tensor:
    """The weighting vector W, shape (max_num_bins + 1,), in units of ``1 / reg_scale`` box sizes.

    Args:
        max_num_bins: N, the index of the last bin (32 for every released model).
        up: (1,) tensor, the bound factor ``up`` (0.5).
        reg_scale: (1,) tensor or float, ``reg_scale`` (4, or 8 for D-FINE-X).
    """
    up = up.reshape(-1)[:1]
    reg_scale = torch.as_tensor(reg_scale, dtype=up.dtype, device=up.device).reshape(-1)[:1]
    inner_bound = up.abs() * reg_scale.abs()  # W(1) = -inner_bound, W(N-1) = +inner_bound
    step = (inner_bound + 1) ** (2 / (max_num_bins - 2))
    half = max_num_bins // 2
    exponents = torch.arange(1, half, device=up.device, dtype=up.dtype)
    right = step**exponents - 1  # W(N/2 + k), k = 1 .. N/2 - 1
    zero = torch.zeros_like(inner_bound)
    return torch.cat([-2 * inner_bound, -right.flip(0), zero, right, 2 * inner_bound])


def distribution_integral(corner_logits: Tensor, project: Tensor) -> Tensor:
    """Expected edge offsets: softmax over the bins of each edge, then the W-weighted sum.

    Args:
        corner_logits: (..., 4 * (N + 1)) logits, edges ordered left, top, right, bottom.
        project: (N + 1,) weighting vector from :func:`weighting_function`.

    Returns:
        (..., 4) offsets in units of ``1 / reg_scale`` box sizes.
    """
    num_bins = project.shape[0]
    probs = corner_logits.reshape(*corner_logits.shape[:-1], 4, num_bins).softmax(dim=-1)
    # A matrix-vector product (one GEMM) rather than multiply-and-sum: faster, and the same summation order as
    # the reference implementations, which keeps checkpoint parity at the float32 rounding level.
    return torch.nn.functional.linear(probs, project.to(probs.dtype)[None]).squeeze(-1)


def distance2bbox(reference: Tensor, distances: Tensor, reg_scale: Tensor | float) -> Tensor:
    """Decode edge offsets around a reference box.

    Args:
        reference: (..., 4) reference boxes, normalised cxcywh (D-FINE uses the first layer's "pre" box).
        distances: (..., 4) offsets (left, top, right, bottom) from :func:`distribution_integral`.
        reg_scale: the ``reg_scale`` scalar; offsets are measured in ``w / reg_scale`` units.

    Returns:
        (..., 4) boxes, normalised cxcywh. Zero offsets give back the reference box.
    """
    reg_scale = abs(reg_scale) if isinstance(reg_scale, float | int) else reg_scale.abs()
    cx, cy, w, h = reference.unbind(-1)
    x1 = cx - (0.5 * reg_scale + distances[..., 0]) * (w / reg_scale)
    y1 = cy - (0.5 * reg_scale + distances[..., 1]) * (h / reg_scale)
    x2 = cx + (0.5 * reg_scale + distances[..., 2]) * (w / reg_scale)
    y2 = cy + (0.5 * reg_scale + distances[..., 3]) * (h / reg_scale)
    return box_xyxy_to_cxcywh(torch.stack([x1, y1, x2, y2], dim=-1))


def bbox2distance(reference: Tensor, target_xyxy: Tensor, reg_scale: float) -> Tensor:
    """Inverse of :func:`distance2bbox`: the offsets that would move ``reference`` onto ``target_xyxy``.

    Args:
        reference: (M, 4) reference boxes, normalised cxcywh.
        target_xyxy: (M, 4) target boxes, normalised corner form.
        reg_scale: the ``reg_scale`` scalar.

    Returns:
        (M, 4) offsets (left, top, right, bottom) in ``w / reg_scale`` units.
    """
    reg_scale = abs(reg_scale)
    cx, cy, w, h = reference.unbind(-1)
    left = (cx - target_xyxy[..., 0]) / (w / reg_scale + 1e-16) - 0.5 * reg_scale
    top = (cy - target_xyxy[..., 1]) / (h / reg_scale + 1e-16) - 0.5 * reg_scale
    right = (target_xyxy[..., 2] - cx) / (w / reg_scale + 1e-16) - 0.5 * reg_scale
    bottom = (target_xyxy[..., 3] - cy) / (h / reg_scale + 1e-16) - 0.5 * reg_scale
    return torch.stack([left, top, right, bottom], dim=-1)


def translate_gt(offsets: Tensor, project: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Locate target offsets between two neighbouring bins of W (the FGL target; original:
    ``dfine_utils.py: translate_gt``).

    Args:
        offsets: (K,) target offsets (flattened edges).
        project: (N + 1,) weighting vector.

    Returns:
        ``(index, weight_left, weight_right)``, each (K,). ``index`` is a float in ``[0, N - 0.1]``; the loss uses
        ``floor(index)`` and ``floor(index) + 1`` as the two bins, weighted ``weight_left`` and ``weight_right``.
        Offsets below W(0) put all weight on bin 0, offsets above W(N) all weight on bin N.
    """
    max_num_bins = project.shape[0] - 1
    offsets = offsets.reshape(-1)
    project = project.to(offsets.dtype)
    index = (offsets[:, None] >= project[None, :]).sum(dim=1).to(offsets.dtype) - 1
    inside = (index >= 0) & (index < max_num_bins)
    lower = index.clamp(0, max_num_bins - 1).long()
    left_value = project[lower]
    right_value = project[(lower + 1).clamp(max=max_num_bins)]
    span = right_value - left_value
    weight_right = torch.where(inside, (offsets - left_value) / torch.where(span == 0, torch.ones_like(span), span),
                               torch.zeros_like(offsets))
    weight_left = torch.where(inside, 1 - weight_right, torch.zeros_like(offsets))
    below = index < 0
    above = index >= max_num_bins
    weight_left = torch.where(below, torch.ones_like(weight_left), weight_left)
    index = torch.where(below, torch.zeros_like(index), index)
    weight_right = torch.where(above, torch.ones_like(weight_right), weight_right)
    index = torch.where(above, torch.full_like(index, max_num_bins - 0.1), index)
    return index.clamp(0, max_num_bins - 0.1), weight_left, weight_right
