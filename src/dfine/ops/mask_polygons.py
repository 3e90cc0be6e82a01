"""Binary masks as COCO polygons: the outer contour of each connected region, with NumPy and contourpy only.

D-FINE-seg exports an instance mask's polygons with OpenCV's ``findContours`` (outer contours only, straight runs
reduced to their end points; ``dfine_seg/infer/torch_model.py`` and its YOLO-txt writer). We trace the same outer
contours as the 0.5 level line of the mask (marching squares, by ``contourpy``, which matplotlib already installs):
the line runs along the pixels' edges and cuts each corner diagonally, so a polygon drawn back covers its region
to within half a pixel at the corners. Holes are left out, as in the outer-contour export. Torch-free.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["mask_polygons"]


def _without_collinear(ring: np.ndarray) -> np.ndarray:
    """A closed ring (first point not repeated at the end) without the points inside straight runs."""
    before = ring - np.roll(ring, 1, axis=0)
    after = np.roll(ring, -1, axis=0) - ring
    turns = np.abs(before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]) > 1e-9
    return ring[turns]


def mask_polygons(mask: Any, decimals: int = 2) -> list[list[float]]:
    """The outer contour of every connected region of ``mask`` (H, W) as a COCO polygon ``[x1, y1, x2, y2, ...]``
    in pixel coordinates (pixel (x, y) covers the square from (x, y) to (x + 1, y + 1)), largest region first.

    Regions whose contour has fewer than 3 corners (none: every region gives at least 4) are left out; an empty
    mask gives an empty list.
    """
    import contourpy

    array = np.asarray(mask, dtype=bool)
    if array.ndim != 2:
        raise ValueError(f"a mask must be (H, W), got shape {array.shape}")
    rows, cols = np.flatnonzero(array.any(axis=1)), np.flatnonzero(array.any(axis=0))
    if len(rows) == 0:
        return []
    top, left = int(rows[0]), int(cols[0])
    crop = array[top:rows[-1] + 1, left:cols[-1] + 1]
    # a ring of zeros so that regions on the crop's border are closed; contourpy places z[i, j] at (x=j, y=i),
    # the centre of pixel (j - 1, i - 1) of the crop: shift back by the ring, then by half a pixel to the corners
    levels = np.pad(crop, 1).astype(np.float64)
    generator = contourpy.contour_generator(z=levels, fill_type=contourpy.FillType.OuterOffset, corner_mask=True)
    points, offsets = generator.filled(0.5, 1.5)
    shift = np.array([left - 0.5, top - 0.5])
    polygons: list[tuple[float, list[float]]] = []
    for region, bounds in zip(points, offsets):
        ring = _without_collinear(region[bounds[0]:bounds[1] - 1] + shift)  # the last point repeats the first
        if len(ring) < 3:
            continue
        x, y = ring[:, 0], ring[:, 1]
        area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
        polygons.append((area, np.round(ring, decimals).reshape(-1).tolist()))
    polygons.sort(key=lambda item: -item[0])
    return [polygon for _, polygon in polygons]
