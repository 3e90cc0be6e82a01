"""Bounding boxes of COCO ``segmentation`` entries, for annotations that come without a usable ``bbox``.

Segmentation data sets and some exporters write polygon-only annotations or RLE-only crowd regions. A detector only
needs the box, so it is computed here instead of refusing the annotation. Three forms exist (COCO data format):

- polygons: ``[[x1, y1, x2, y2, ...], ...]`` in pixel coordinates; the box spans all their points;
- uncompressed RLE: ``{"counts": [ints], "size": [h, w]}``;
- compressed RLE: ``{"counts": "string", "size": [h, w]}`` (COCO's LEB128-like string encoding of the counts).

RLE counts alternate background / foreground run lengths, starting with background, over the mask read in
column-major (Fortran) order. The box is taken from the runs directly, so no full mask is ever allocated; it covers
whole pixels, ``(x_min, y_min, x_max + 1, y_max + 1)``, which is what ``pycocotools.mask.toBbox`` gives.

Nothing here knows about files: a malformed segmentation raises :class:`SegmentationError` with a short reason, and
the COCO parser turns it into a problem naming the annotation.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

BoxXYXY = tuple[float, float, float, float]


class SegmentationError(ValueError):
    """A segmentation that is empty or cannot be read; the message says why (without naming the file)."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    # JSON writers may turn integers into 3.0; a run length is still a whole non-negative number
    return _is_number(value) and math.isfinite(value) and float(value).is_integer() and value >= 0


def polygon_box(polygons: list[Any]) -> BoxXYXY:
    """The box spanning every point of a list of ``[x1, y1, x2, y2, ...]`` polygons.

    Empty polygons are skipped (some exporters write ``[]`` next to the real ones); only when no point is left
    is the segmentation empty.
    """
    xs: list[float] = []
    ys: list[float] = []
    for i, polygon in enumerate(polygons):
        if not isinstance(polygon, list) or not all(_is_number(v) for v in polygon):
            raise SegmentationError(f"polygon {i} must be a list of numbers [x1, y1, x2, y2, ...]")
        if len(polygon) % 2:
            raise SegmentationError(f"polygon {i} has an odd number of coordinates ({len(polygon)})")
        xs += [float(v) for v in polygon[0::2]]
        ys += [float(v) for v in polygon[1::2]]
    if not xs:
        raise SegmentationError("the segmentation is empty (no polygon points)")
    return min(xs), min(ys), max(xs), max(ys)


def _decode_counts_string(text: str) -> list[int]:
    """COCO's compressed counts (``rleFrString`` in pycocotools' maskApi.c): each count is a run of 5-bit groups,
    least significant first, stored as ``chr(group + 48)`` with bit 0x20 meaning "another group follows" and bit 0x10
    of the last group the sign; from the third count on, the value is a difference to the count two places before.
    """
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text):
                raise SegmentationError("compressed RLE 'counts' ends in the middle of a number")
            group = ord(text[position]) - 48
            if not 0 <= group < 64:
                raise SegmentationError(f"compressed RLE 'counts' has an invalid character {text[position]!r}")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def _rle_size(size: Any) -> tuple[int, int]:
    if not isinstance(size, list) or len(size) != 2 or not all(_is_count(v) and v > 0 for v in size):
        raise SegmentationError(f"RLE 'size' must be [height, width] (two positive integers), got {size!r}")
    return int(size[0]), int(size[1])


def _rle_counts(counts: Any) -> list[int]:
    if isinstance(counts, str):
        decoded = _decode_counts_string(counts)
    elif isinstance(counts, list) and all(_is_count(v) for v in counts):
        decoded = [int(v) for v in counts]
    else:
        raise SegmentationError("RLE 'counts' must be a list of non-negative integers or a compressed string")
    if any(c < 0 for c in decoded):
        raise SegmentationError("compressed RLE 'counts' decodes to a negative run length")
    return decoded


def rle_box(rle: dict[str, Any]) -> BoxXYXY:
    """The whole-pixel box of an RLE mask (compressed or not), computed from its runs.

    Counts that stop before ``h * w`` pixels are accepted (the rest is background); counts that go past it are not.
    """
    height, width = _rle_size(rle.get("size"))
    counts = np.asarray(_rle_counts(rle.get("counts")), dtype=np.int64)
    ends = np.cumsum(counts)
    if counts.size and ends[-1] > height * width:
        raise SegmentationError(f"RLE 'counts' cover {int(ends[-1])} pixels, more than the {height}x{width} mask")
    lengths, starts = counts[1::2], (ends - counts)[1::2]  # odd runs are foreground
    keep = lengths > 0
    if not keep.any():
        raise SegmentationError("the segmentation is empty (the RLE mask has no foreground pixel)")
    first, last = starts[keep], starts[keep] + lengths[keep] - 1
    first_col, first_row = np.divmod(first, height)
    last_col, last_row = np.divmod(last, height)
    # A run that wraps into the next column covers the bottom of one column and the top of the next: all rows.
    one_column = first_col == last_col
    y_min = int(np.where(one_column, first_row, 0).min())
    y_max = int(np.where(one_column, last_row, height - 1).max())
    return float(first_col.min()), float(y_min), float(last_col.max() + 1), float(y_max + 1)


def rle_size(segmentation: Any) -> tuple[int, int] | None:
    """``(height, width)`` of an RLE segmentation, None for polygons (which carry no size)."""
    return _rle_size(segmentation.get("size")) if isinstance(segmentation, dict) else None


def segmentation_box(segmentation: Any) -> BoxXYXY:
    """The ``xyxy`` box of a COCO segmentation: polygons, uncompressed or compressed RLE.

    Raises:
        SegmentationError: the segmentation is empty or malformed.
    """
    if isinstance(segmentation, list):
        return polygon_box(segmentation)
    if isinstance(segmentation, dict) and "counts" in segmentation:
        return rle_box(segmentation)
    raise SegmentationError(
        "'segmentation' must be a list of polygons or an RLE object {'counts': ..., 'size': [h, w]}, "
        f"got {type(segmentation).__name__}"
    )
