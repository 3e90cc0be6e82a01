"""Box uncertainty from the FDR edge distributions (D-FINE, Peng et al. 2024, Fine-grained Distribution Refinement).

D-FINE does not regress an edge: its last decoder layer gives, for each of the four edges, a probability ``p(n)`` over
``N + 1`` bins, and the edge sits at the distribution's mean. In the paper's notation the edge distances are
``d = d0 + {H, H, W, W} · Σ_n W(n) p(n)``; in the original repository (``src/zoo/dfine/dfine_utils.py``:
``weighting_function``, ``distance2bbox``; ``dfine_decoder.py``: ``Integral``) the left edge is

    x1 = cx - (reg_scale / 2 + Σ_n p(n) W(n)) · w / reg_scale

around the fixed reference box ``(cx, cy, w, h)`` (the first layer's "pre" box), with the non-uniform bin positions
``W(n)`` of :func:`dfine.ops.fdr.weighting_function`; the other edges alike (top with ``h``, right and bottom with
``+``). The box is the expectation of an edge position that the model describes as a distribution, so the spread of
that same distribution is the model's own localisation uncertainty. Taking the edge as the random variable
``x1(n)`` with ``n ~ p``, it is affine in ``W(n)`` with slope ``w / reg_scale``, hence

    σ(x1) = (w / reg_scale) · sqrt(Σ_n p(n) (W(n) - Σ_m p(m) W(m))²)

(``h`` for the top and bottom edges). This is what :func:`edge_uncertainty` returns, in the normalised image units of
the boxes (fractions of the input's width for left and right, of its height for top and bottom); multiplying by the
original image's width and height gives pixels of that image, as post-processing does with the boxes. A sharp,
single-bin distribution gives 0; mass split between far bins gives a large σ.

One number per box (:func:`box_uncertainty`) is the mean of the four σ, each divided by the box's side along its
axis: the typical edge error as a fraction of the box's size. It does not grow with the object's size, just as
IoU does not, so it ranks boxes by how uncertain their overlap with the object is.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["box_uncertainty", "edge_spread", "edge_uncertainty"]


def edge_spread(corner_logits: Tensor, project: Tensor) -> Tensor:
    """The standard deviation of each edge's offset distribution, in ``W`` units (``1 / reg_scale`` box sizes).

    Args:
        corner_logits: (..., 4 · (N + 1)) FDR logits, edges ordered left, top, right, bottom.
        project: (N + 1,) bin positions W(n) from :func:`dfine.ops.fdr.weighting_function`.

    Returns:
        (..., 4), non-negative; float32 at least (a half-precision head's logits are widened first).
    """
    dtype = torch.promote_types(corner_logits.dtype, torch.float32)
    num_bins = project.shape[0]
    probs = corner_logits.to(dtype).unflatten(-1, (4, num_bins)).softmax(dim=-1)
    positions = project.to(device=probs.device, dtype=dtype)
    mean = (probs * positions).sum(dim=-1, keepdim=True)
    # centred second moment: E[W²] - E[W]² would lose the small spreads of sharp edges to cancellation
    variance = (probs * (positions - mean).square()).sum(dim=-1)
    return variance.sqrt()


def edge_uncertainty(corner_logits: Tensor, reference: Tensor, project: Tensor, reg_scale: Tensor | float) -> Tensor:
    """The standard deviation of each edge's position (left, top, right, bottom), in normalised image units.

    Args:
        corner_logits: (..., 4 · (N + 1)) the final decoder layer's FDR logits.
        reference: (..., 4) the fixed FDR reference boxes, normalised cxcywh (``initial_reference_points``).
        project: (N + 1,) W(n) for the model's ``up`` and ``reg_scale``.
        reg_scale: the model's ``reg_scale`` (the decoder's stored value, which wins over the config's).

    Returns:
        (..., 4): σ of the left and right edges as fractions of the image width, of the top and bottom edges as
        fractions of its height.
    """
    spread = edge_spread(corner_logits, project)
    scale = reg_scale.abs().to(spread) if isinstance(reg_scale, Tensor) else abs(float(reg_scale))
    width, height = reference[..., 2].to(spread), reference[..., 3].to(spread)
    sizes = torch.stack([width, height, width, height], dim=-1)
    return spread * sizes / scale


def box_uncertainty(edges: Tensor, boxes_xyxy: Tensor) -> Tensor:
    """One uncertainty per box: the mean over its edges of σ divided by the box's side along that edge's axis.

    Args:
        edges: (..., 4) σ per edge (left, top, right, bottom) from :func:`edge_uncertainty`, in the units of
            ``boxes_xyxy`` (both normalised, or both in pixels).
        boxes_xyxy: (..., 4) the boxes, ``x1, y1, x2, y2``.

    Returns:
        (...,), non-negative. A box of zero width or height divides by a tiny side instead (a large value: such a
        box is as uncertain as boxes get).
    """
    width = (boxes_xyxy[..., 2] - boxes_xyxy[..., 0]).to(edges)
    height = (boxes_xyxy[..., 3] - boxes_xyxy[..., 1]).to(edges)
    tiny = torch.finfo(edges.dtype).eps
    sides = torch.stack([width, height, width, height], dim=-1).abs().clamp(min=tiny)
    return (edges / sides).mean(dim=-1)
