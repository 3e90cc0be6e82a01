"""mask_polygons: the outer contour of each region of a mask, as COCO polygons that rasterise back to the region."""

from __future__ import annotations

import numpy as np
import pytest
from faster_coco_eval.core import mask as coco_mask
from scipy import ndimage

from dfine.ops.mask_polygons import mask_polygons


def _rasterised(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    return coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(polygons, height, width))).astype(bool)


def test_each_region_gives_one_polygon_that_rasterises_back_to_it_holes_filled() -> None:
    mask = np.zeros((30, 40), dtype=bool)
    mask[3:15, 5:25] = True
    mask[6:9, 10:12] = False  # a hole: outer contours only, so it is filled
    yy, xx = np.mgrid[:30, :40]
    mask |= (xx - 32) ** 2 + (yy - 22) ** 2 <= 5 ** 2  # a disc: a contour with many corners
    mask[25, 0] = True  # one pixel on the border
    polygons = mask_polygons(mask)
    assert len(polygons) == 3
    assert all(len(p) % 2 == 0 and len(p) >= 6 for p in polygons)
    assert np.array_equal(_rasterised(polygons, 30, 40), ndimage.binary_fill_holes(mask))
    # largest first, and a rectangle keeps only its corners (cut diagonally): 8 points
    assert len(polygons[0]) == 16
    xs, ys = polygons[0][0::2], polygons[0][1::2]
    assert (min(xs), min(ys), max(xs), max(ys)) == (5.0, 3.0, 25.0, 15.0)  # on the pixels' outer edges


def test_random_blobs_rasterise_back_within_a_few_pixels() -> None:
    rng = np.random.default_rng(0)
    mask = ndimage.binary_opening(ndimage.gaussian_filter(rng.random((64, 80)), 3) > 0.5)
    filled = ndimage.binary_fill_holes(mask)
    back = _rasterised(mask_polygons(mask), 64, 80)
    assert (back != filled).sum() <= 0.02 * filled.sum()


def test_empty_and_bad_masks() -> None:
    assert mask_polygons(np.zeros((5, 5), dtype=bool)) == []
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        mask_polygons(np.zeros((2, 5, 5), dtype=bool))
