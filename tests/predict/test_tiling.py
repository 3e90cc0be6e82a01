"""dfine.predict.tiling: windows that cover the image, suppression by overlap of the smaller box, and a tiled detector
that finds small objects a whole-image pass misses, each once, at its place in the image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from dfine.errors import ConfigError
from dfine.predict.tiling import TiledDetector, cut_by_tile, merge_overlaps, tile_windows


@pytest.mark.parametrize("width, height, tile, overlap", [(1000, 800, 256, 0.25), (640, 640, 640, 0.2),
                                                          (300, 200, 640, 0.2), (1001, 257, 256, 0.0),
                                                          (5000, 300, 640, 0.5)])
def test_windows_cover_the_image_and_overlap(width, height, tile, overlap) -> None:
    windows = tile_windows(width, height, tile, overlap)
    covered = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in windows:
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height and x1 - x0 <= tile and y1 - y0 <= tile
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    xs = sorted({w[0] for w in windows})
    for a, b in zip(xs, xs[1:], strict=False):  # neighbours share at least the asked overlap
        assert a + tile - b >= int(overlap * tile)
    if width <= tile and height <= tile:
        assert windows == [(0, 0, width, height)]


def test_merging_keeps_one_box_per_object_and_class() -> None:
    boxes = np.array([[0, 0, 100, 100],    # a whole object
                      [60, 0, 100, 100],   # the part of it a tile kept: inside the whole one
                      [60, 0, 100, 100],   # the same place, another class
                      [200, 200, 220, 220],  # elsewhere
                      [0, 0, 100, 100]], dtype=float)  # a weaker duplicate
    scores = np.array([0.9, 0.95, 0.5, 0.3, 0.2])
    labels = np.array([0, 0, 1, 0, 0])
    merged, kept_scores, kept_labels = merge_overlaps(boxes, scores, labels, 0.5)
    # the cut-off part scores higher, yet the object keeps its whole box: the part grows to hold the boxes it absorbs
    assert merged.tolist() == [[0, 0, 100, 100], [60, 0, 100, 100], [200, 200, 220, 220]]
    assert kept_scores.tolist() == [0.95, 0.5, 0.3] and kept_labels.tolist() == [0, 1, 0]
    # two boxes sharing 40% of the smaller one's area: one object from 0.4 on, two above
    pair, pair_scores, pair_labels = np.array([[0, 0, 100, 100], [60, 0, 160, 100]], float), np.array([0.8, 0.7]), \
        np.array([3, 3])
    assert merge_overlaps(pair, pair_scores, pair_labels, 0.4)[0].tolist() == [[0, 0, 160, 100]]
    assert merge_overlaps(pair, pair_scores, pair_labels, 0.5)[0].tolist() == pair.tolist()
    empty = merge_overlaps(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))
    assert empty[0].shape == (0, 4) and empty[1].shape == (0,)


def test_parts_cut_by_a_tile_come_after_complete_boxes() -> None:
    # a tile (0, 0, 256, 256) of a 1000 x 800 image: its right and bottom borders are inside the image
    boxes = np.array([[10, 10, 50, 50], [0, 100, 40, 140], [200, 100, 255, 140], [100, 230, 150, 256]], float)
    assert cut_by_tile(boxes, (0, 0, 256, 256), 1000, 800, 2.0).tolist() == [False, False, True, True]
    # the image's own border cuts nothing: the same tile of a 256 x 256 image
    assert not cut_by_tile(boxes, (0, 0, 256, 256), 256, 256, 2.0).any()
    # a stronger cut part and two weaker complete boxes that each overlap half of it: the first complete box keeps
    # the object and absorbs the part; without the flag the part would absorb both complete boxes into one
    parts = np.array([[50, 0, 150, 100], [0, 0, 100, 100], [100, 0, 200, 100]], float)
    scores, labels = np.array([0.99, 0.8, 0.7]), np.zeros(3, np.int64)
    assert merge_overlaps(parts, scores, labels, 0.5)[0].tolist() == [[0, 0, 200, 100]]
    flagged = merge_overlaps(parts, scores, labels, 0.5, cut=np.array([True, False, False]))
    assert flagged[0].tolist() == [[0, 0, 150, 100], [100, 0, 200, 100]]


class SquareFinder:
    """A stand-in detector for white squares on black: like a real model it misses objects smaller than 3% of the
    picture it is given, and scores an object cut by the picture's border lower."""

    class_names = ["square"]

    def __init__(self, cut_score: float = 0.5) -> None:
        self.calls: list[int] = []
        self.cut_score = cut_score

    def predict(self, images, threshold=0.5):
        self.calls.append(len(images))
        out = []
        for image in images:
            array = np.asarray(image.convert("L")) > 128
            found, _ = ndimage.label(array)
            boxes, scores = [], []
            for region in ndimage.find_objects(found):
                y, x = region
                if x.stop - x.start < 0.03 * image.width:
                    continue
                cut = x.start == 0 or y.start == 0 or x.stop == image.width or y.stop == image.height
                boxes.append([x.start, y.start, x.stop, y.stop])
                scores.append(self.cut_score if cut else 0.9)
            out.append({"boxes": np.array(boxes, dtype=float).reshape(-1, 4), "scores": np.array(scores),
                        "labels": np.zeros(len(boxes), dtype=np.int64)})
        return out


@pytest.mark.parametrize("cut_score", [0.5, 0.95])  # parts cut off by a tile border scoring lower, or higher
def test_tiles_find_small_objects_once_each_at_their_place(cut_score: float) -> None:
    image = Image.new("RGB", (1000, 800))
    draw = ImageDraw.Draw(image)
    small = [(100, 100), (250, 300), (560, 180), (900, 700), (380, 520)]  # (250, 300) straddles tiles
    for x, y in small:
        draw.rectangle([x, y, x + 15, y + 15], fill="white")
    draw.rectangle([500, 350, 849, 649], fill="white")  # larger than a tile: only the whole image sees it whole
    finder = SquareFinder(cut_score)
    whole = finder.predict([image])[0]
    assert len(whole["boxes"]) == 1  # at full size the small squares are below the detector's limit

    result = TiledDetector(finder, tile=256, overlap=0.25, batch_size=4).predict(image)[0]
    expected = sorted([[x, y, x + 16, y + 16] for x, y in small] + [[500, 350, 850, 650]])
    assert sorted(result["boxes"].tolist()) == expected
    assert result["scores"].tolist() == sorted(result["scores"].tolist(), reverse=True)
    assert max(finder.calls) <= 4  # tiles go in batches


def test_a_small_image_is_one_call_and_bad_options_are_refused() -> None:
    finder = SquareFinder()
    TiledDetector(finder, tile=640).predict([Image.new("RGB", (300, 200))])
    assert finder.calls == [1]  # no tiles, no second whole-image pass
    for bad in ({"tile": 16}, {"tile": 640.0}, {"overlap": 0.95}, {"match_threshold": 0}, {"batch_size": 0}):
        with pytest.raises(ConfigError):
            TiledDetector(finder, **bad)
