"""Instance masks from annotations: COCO polygons and RLE, and YOLO-seg polygons, rasterised per object.

A segmentation is kept in the index as the annotation file wrote it, in absolute pixels of the image on disk (YOLO's
normalised polygons are scaled when parsed): a list of polygons ``[[x1, y1, x2, y2, ...], ...]`` (the parts of one
object, united) or a COCO RLE ``{"size": [h, w], "counts": ...}`` (compressed string or uncompressed list).

Rasterisation is COCO's own (``rleFrPoly`` through faster-coco-eval, the evaluation's dependency): the training
targets and the ``segm`` evaluation's ground truth are the same pixels. A polygon is rasterised on its bounding box
only and pasted into the image-sized mask, ten times faster than on the whole image (0.2 against 2.4 ms for an
object on a 640x480 image). COCO's rasteriser rounds on a grid scaled by 5, which a shift by whole pixels keeps,
but not every floating-point rounding after it: about one polygon in fifty differs by a pixel at an edge.

Nothing here knows about files: checks return a short reason, and the parsers and the data set check name the file.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "MIN_POLYGON_POINTS",
    "box_segmentation",
    "crosses_itself",
    "normalised_polygon",
    "outside_image",
    "polygon_parts",
    "rasterize",
    "segmentation_area",
]

#: a polygon needs three points to enclose any area
MIN_POLYGON_POINTS = 3

# Polygons with more points than this are not searched for self-crossings (the pairwise test is quadratic).
_MAX_CROSSING_POINTS = 4000


def polygon_parts(segmentation: list[Any]) -> tuple[list[list[float]], str | None]:
    """The usable parts of a polygon segmentation, and why the others were left out (None when none was).

    A part with fewer than :data:`MIN_POLYGON_POINTS` points or an odd number of coordinates encloses nothing (some
    exporters write them beside the real parts); non-numeric parts are left out too.
    """
    kept, dropped = [], None
    for polygon in segmentation:
        numbers = isinstance(polygon, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                    and math.isfinite(v) for v in polygon)
        if not numbers:
            dropped = "a polygon that is not a list of finite numbers"
        elif len(polygon) % 2:
            dropped = f"a polygon with an odd number of coordinates ({len(polygon)})"
        elif len(polygon) < 2 * MIN_POLYGON_POINTS:
            dropped = f"a polygon with fewer than {MIN_POLYGON_POINTS} points ({len(polygon) // 2})"
        else:
            kept.append([float(v) for v in polygon])
    return kept, dropped


def normalised_polygon(coords: list[float], width: int, height: int) -> list[float]:
    """A YOLO-seg polygon (``x1 y1 x2 y2 ...`` in [0, 1]) in absolute pixels of a ``width`` x ``height`` image."""
    scale = np.tile(np.asarray([width, height], dtype=np.float64), len(coords) // 2)
    return (np.asarray(coords, dtype=np.float64) * scale).tolist()


def box_segmentation(box_xyxy: tuple[float, float, float, float] | list[float]) -> list[list[float]]:
    """A box as a one-part polygon: what an object annotated with a box only covers (COCO crowd regions)."""
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    return [[x1, y1, x2, y1, x2, y2, x1, y2]]


def _coco_mask() -> Any:
    from faster_coco_eval.core import mask as coco_mask

    return coco_mask


def _rle_mask(rle: dict[str, Any], height: int, width: int) -> np.ndarray:
    coco_mask = _coco_mask()
    size = [int(v) for v in rle["size"]]
    if size != [height, width]:
        raise ValueError(f"an RLE mask of size {size} for a {height}x{width} ([height, width]) image")
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed: COCO's frUncompressedRLE
        return coco_mask.decode(coco_mask.frPyObjects({"size": size, "counts": counts}, height, width))
    return coco_mask.decode({"size": size, "counts": counts})


def rasterize(segmentation: Any, height: int, width: int) -> np.ndarray:
    """An (height, width) uint8 mask (1 inside) of one object's segmentation (see the module docstring).

    Polygons are united (COCO's ``merge``), each filled as COCO fills it; parts left out by :func:`polygon_parts`
    add nothing.

    Raises:
        ValueError: an RLE mask made for another image size.
    """
    if isinstance(segmentation, dict):
        return np.ascontiguousarray(_rle_mask(segmentation, height, width), dtype=np.uint8)
    mask = np.zeros((height, width), dtype=np.uint8)
    parts, _ = polygon_parts(segmentation)
    if not parts:
        return mask
    points = np.concatenate([np.asarray(p).reshape(-1, 2) for p in parts])
    # the bounding box in whole pixels, one pixel wider on each side (rounding), inside the image
    x0, y0 = max(math.floor(points[:, 0].min()) - 1, 0), max(math.floor(points[:, 1].min()) - 1, 0)
    x1, y1 = min(math.ceil(points[:, 0].max()) + 1, width), min(math.ceil(points[:, 1].max()) + 1, height)
    if x1 <= x0 or y1 <= y0:
        return mask  # entirely outside the image
    offset = np.asarray([x0, y0], dtype=np.float64)
    shifted = [(np.asarray(p).reshape(-1, 2) - offset).reshape(-1).tolist() for p in parts]
    coco_mask = _coco_mask()
    rle = coco_mask.merge(coco_mask.frPyObjects(shifted, y1 - y0, x1 - x0))
    mask[y0:y1, x0:x1] = coco_mask.decode(rle)
    return mask


def segmentation_area(segmentation: Any, height: int, width: int) -> float:
    """Pixels covered by a segmentation on a (height, width) image: COCO's ``area`` of an annotation."""
    return float(rasterize(segmentation, height, width).sum())


def outside_image(segmentation: Any, width: int, height: int, tolerance: float = 0.0) -> str | None:
    """Whether a polygon segmentation leaves its ``width`` x ``height`` image: ``"entirely"`` (its mask is empty),
    ``"partly"`` (some point lies more than ``tolerance`` pixels outside; the mask is clipped to the image) or None.
    A polygon that encloses no area (all its points on a line) counts as entirely outside: its mask is empty too.
    RLE masks have the image's size by construction (checked when parsed)."""
    if not isinstance(segmentation, list):
        return None
    parts, _ = polygon_parts(segmentation)
    if not parts:
        return None
    points = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in parts]
    if all(_on_a_line(p) for p in points):
        return "entirely"
    stacked = np.concatenate(points)
    x0, y0 = stacked.min(axis=0)
    x1, y1 = stacked.max(axis=0)
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        return "entirely"
    if max(-x0, -y0, x1 - width, y1 - height) > tolerance:
        return "partly"
    return None


def _on_a_line(points: np.ndarray) -> bool:
    # not the signed (shoelace) area, which is 0 for a symmetric bow tie that does cover pixels
    return bool(np.linalg.matrix_rank(points - points[0], tol=1e-9) < 2)


def crosses_itself(segmentation: Any) -> bool:
    """Whether some part of a polygon segmentation has two non-adjacent edges that cross (a "bow tie").

    Such a polygon is still filled (by COCO's rule), but rarely the way its author meant. Only proper crossings
    count: edges that touch or overlap along a line do not. RLE masks never cross themselves.
    """
    if not isinstance(segmentation, list):
        return False
    parts, _ = polygon_parts(segmentation)
    return any(_part_crosses_itself(np.asarray(p, dtype=np.float64).reshape(-1, 2)) for p in parts)


def _part_crosses_itself(points: np.ndarray) -> bool:
    count = len(points)
    if count < 4 or count > _MAX_CROSSING_POINTS:  # a triangle cannot cross itself
        return False
    start, end = points, np.roll(points, -1, axis=0)  # edge i runs from point i to point i + 1

    def orientation(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        # sign of the cross product (b - a) x (c - a), for every pair: a, b of shape (n, 1, 2), c of shape (1, n, 2)
        return np.sign((b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1])
                       - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0]))

    a, b = start[:, None], end[:, None]
    c, d = start[None], end[None]
    crossing = (orientation(a, b, c) * orientation(a, b, d) < 0) & (orientation(c, d, a) * orientation(c, d, b) < 0)
    index = np.arange(count)
    gap = (index[None] - index[:, None]) % count
    non_adjacent = (gap > 1) & (gap < count - 1)
    return bool((crossing & non_adjacent).any())
