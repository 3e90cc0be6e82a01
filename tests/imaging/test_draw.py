"""Drawing: boxes land where they should, nothing else is touched, odd inputs do not crash."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dfine.imaging.draw import class_color, draw_batch, draw_detections, draw_ground_truth, make_grid

BACKGROUND = (90, 90, 90)


def _canvas(width: int = 640, height: int = 480) -> Image.Image:
    return Image.new("RGB", (width, height), BACKGROUND)


def _changed(before: Image.Image, after: Image.Image) -> np.ndarray:
    return (np.asarray(before).astype(int) != np.asarray(after).astype(int)).any(axis=-1)  # (H, W) bool


def test_box_outline_drawn_and_nothing_far_away_changes():
    image = _canvas()
    out = draw_detections(image, torch.tensor([[100.0, 150.0, 300.0, 350.0]]), torch.tensor([0]),
                          torch.tensor([0.93]), ["person"])  # fmt: skip
    assert out.size == image.size and out.mode == "RGB"
    assert image.getpixel((100, 250)) == BACKGROUND  # the input is not modified
    color = class_color(0)
    for point in [(100, 250), (300, 250), (200, 150), (200, 350)]:  # the four edges
        assert out.getpixel(point) == color
    changed = _changed(image, out)
    assert not changed[200:340, 110:290].any()  # the interior is left clear (no fill)
    rows, cols = np.nonzero(changed)
    # Everything drawn stays within the outline, plus a tag above the top-left corner.
    assert cols.min() >= 98 and cols.max() <= 302 and rows.max() <= 352
    assert 150 - 40 <= rows.min() < 150  # the tag sits above the box
    tag = np.asarray(out)[rows.min() : 148, 100:140].reshape(-1, 3)
    assert (tag == color).all(axis=1).mean() > 0.4 and (tag != color).any(axis=1).any()  # filled, with text


def test_zero_detections_leaves_image_unchanged():
    image = _canvas(320, 200)
    for boxes, labels, scores in [
        (torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0)),
        ([], [], []),
        (np.zeros((0, 4)), np.zeros(0, dtype=int), None),
    ]:
        out = draw_detections(image, boxes, labels, scores)
        assert out.size == image.size and not _changed(image, out).any()


def test_boxes_partly_or_fully_outside_the_image():
    image = _canvas(320, 240)
    boxes = np.array([[-50.0, -40.0, 100.0, 90.0], [250.0, 200.0, 500.0, 400.0], [400.0, 10.0, 500.0, 50.0]])
    out = draw_detections(image, boxes, [1, 2, 3], [0.9, 0.8, 0.7], {1: "bicycle", 2: "car"})
    assert out.size == image.size
    assert out.getpixel((0, 40)) == class_color(1)  # clipped left edge of the first box
    assert out.getpixel((319, 220)) == class_color(2)  # clipped right edge of the second box
    changed = _changed(image, out)
    assert changed[:, :5].any() and changed[-5:, :].any()
    only_outside = draw_detections(image, boxes[2:], [3], [0.7])
    assert not _changed(image, only_outside).any()


def test_labels_stay_inside_the_image_at_the_corners():
    image = _canvas(200, 150)
    out = draw_detections(image, [[170.0, 0.0, 199.0, 30.0]], [4], [0.5], ["a-rather-long-class-name"])
    changed = _changed(image, out)
    rows, cols = np.nonzero(changed)
    assert rows.min() >= 0 and cols.min() < 170  # the tag was shifted left to fit
    assert changed[:20, :].any()  # no room above: the tag sits inside the box's top


def test_threshold_names_and_inputs():
    image = _canvas(320, 240)
    boxes = [[10, 10, 100, 100], [150, 50, 300, 200]]
    high_only = draw_detections(image, boxes, [0, 1], [0.9, 0.3], threshold=0.5)
    assert high_only.getpixel((10, 50)) == class_color(0)
    assert high_only.getpixel((150, 120)) == BACKGROUND
    both = draw_detections(image, torch.tensor(boxes, dtype=torch.float64), torch.tensor([0, 1]), None, None)
    assert both.getpixel((150, 120)) == class_color(1)
    gray = draw_detections(image.convert("L"), boxes, [0, 1], [0.9, 0.3])
    assert gray.mode == "RGB"
    with pytest.raises(ValueError):
        draw_detections(image, boxes, [0], [0.9, 0.3])


def test_line_width_grows_with_image_size():
    def outline_width(size: tuple[int, int]) -> int:
        w, h = size
        out = draw_detections(_canvas(w, h), [[w * 0.25, h * 0.25, w * 0.75, h * 0.75]], [0], [0.9])
        row = np.asarray(out)[h // 2]
        return int((row == class_color(0)).all(axis=1)[: w // 2].sum())

    assert outline_width((1920, 1080)) > outline_width((320, 240)) >= 2


def test_ground_truth_is_dashed():
    image = _canvas(320, 240)
    out = draw_ground_truth(image, [[20, 40, 300, 200]], [5], ["dog"] * 6)
    top_edge = np.asarray(out)[40, 60:280]
    on = (top_edge == class_color(5)).all(axis=1)
    assert on.any() and not on.all()  # gaps between dashes
    assert out.getpixel((20, 150)) in (class_color(5), BACKGROUND)


def test_palette_distinct_and_stable():
    colors = [class_color(i) for i in range(80)]
    assert len(set(colors[:20])) == 20
    assert all(colors[i] != colors[i + 1] for i in range(79))
    assert class_color(57) == colors[57]


def test_make_grid_layout():
    a = Image.new("RGB", (100, 50), (255, 0, 0))
    b = Image.new("RGB", (60, 80), (0, 0, 255))
    c = Image.new("L", (40, 40), 0)
    grid = make_grid([a, b, c], columns=2, padding=8)
    assert grid.size == (2 * 100 + 3 * 8, 2 * 80 + 3 * 8)
    assert grid.getpixel((8 + 50, 8 + 40)) == (255, 0, 0)  # a, centred vertically in its 100×80 cell
    assert grid.getpixel((8 + 100 + 8 + 50, 8 + 40)) == (0, 0, 255)
    assert grid.getpixel((8 + 50, 8 + 80 + 8 + 40)) == (0, 0, 0)
    titled = make_grid([a, b], columns=2, titles=["ours", "reference"])
    assert titled.height > 80 + 2 * 8 and titled.width == grid.width
    assert make_grid([a, b, c], columns=5).size[0] == 3 * 100 + 4 * 8  # columns capped at the image count


def test_draw_batch_puts_normalised_targets_on_the_augmented_pixels():
    """Boxes (cx, cy, w, h) in [0, 1] land in pixels as draw_ground_truth would draw them, image by image."""
    torch.manual_seed(0)
    pixels = torch.rand(3, 3, 64, 96)  # (B, 3, H, W) in [0, 1], as the training loader yields them
    targets = [{"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]])},
               {"class_labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.25, 0.25, 0.5, 0.5],
                                                                             [0.75, 0.5, 0.25, 1.0]])},
               {"class_labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}]
    names = ["circle", "square", "triangle"]
    out = draw_batch(pixels, targets, names, max_images=2, columns=2)
    pictures = [Image.fromarray((pixels[i] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()) for i in (0, 1)]
    expected = make_grid([draw_ground_truth(pictures[0], [[24, 16, 72, 48]], [1], names),
                          draw_ground_truth(pictures[1], [[0, 0, 48, 32], [60, 0, 84, 64]], [0, 2], names)],
                         columns=2, titles=["0: 1 box", "1: 2 boxes"])
    assert np.array_equal(np.asarray(out), np.asarray(expected))  # max_images=2: the third image is left out
    # a large image is shrunk (boxes with it) so that a 16-image grid stays a few megapixels
    big = draw_batch(torch.rand(1, 3, 800, 1000), targets[:1], names, cell_size=400)
    assert max(big.size) < 450
    assert draw_batch(pixels[2:], targets[2:], names).size[0] > 96  # an image without boxes is drawn as it is


def test_uncertainty_bands_are_as_wide_as_each_edges_sigma():
    """A band of ±σ around each edge: 12 px each side of the uncertain right edge, nothing around the sharp ones."""
    image = _canvas()
    box = torch.tensor([[100.0, 150.0, 300.0, 350.0]])
    plain = draw_detections(image, box, [0], [0.9], line_width=2)
    banded = draw_detections(image, box, [0], [0.9], line_width=2, edge_uncertainty=[[0.0, 0.0, 12.0, 0.0]])
    extra = _changed(plain, banded)
    rows, cols = np.nonzero(extra)
    assert 287 <= cols.min() <= 289 and 311 <= cols.max() <= 313  # 300 ± 12, the right edge only
    assert rows.min() >= 150 and rows.max() <= 350  # along the box's height
    tint = np.asarray(banded, dtype=int)[250, 305] - np.asarray(plain, dtype=int)[250, 305]
    assert np.sign(tint).tolist() == np.sign(np.array(class_color(0)) - BACKGROUND).tolist()  # towards the colour


def test_tracks_are_coloured_by_id_tagged_and_trailed():
    from dfine.imaging.draw import draw_tracks

    image = _canvas()
    out = draw_tracks(image, [[100.0, 150.0, 300.0, 350.0]], [0], [7], [0.9], ["person"],
                      trails={7: [(50.0, 400.0), (150.0, 420.0), (200.0, 250.0)]}, line_width=3)
    assert out.getpixel((100, 250)) == class_color(7)  # the track's colour, not the class's
    assert out.getpixel((100, 410)) == class_color(7)  # on the trail, below the box
    # without trails or tracks nothing breaks
    assert draw_tracks(image, np.zeros((0, 4)), [], [], [], ["person"]).size == image.size


def test_masks_are_filled_translucently_in_the_class_colour_and_outlined():
    image = Image.new("RGB", (120, 90), (100, 100, 100))
    masks = np.zeros((2, 90, 120), dtype=bool)
    masks[0, 20:60, 10:50] = True
    masks[1, 30:70, 70:110] = True
    out = np.asarray(draw_detections(image, [[5, 15, 55, 65], [65, 25, 115, 75]], [0, 1], [0.9, 0.2],
                                     masks=masks, threshold=0.5, line_width=4))
    color = np.array(class_color(0))
    inside = out[40, 30].astype(int)
    # inside: between the grey and the class colour
    assert np.all(np.abs(inside - (0.55 * 100 + 0.45 * color)) <= 1)
    # outline (line width 4: 2 pixels) in the class colour, just inside the mask's edge
    assert np.array_equal(out[40, 10], color) and np.array_equal(out[40, 11], color)
    assert not np.array_equal(out[40, 13], color)
    # outside every mask and box, and under the mask below the threshold, the picture is unchanged
    assert np.array_equal(out[85, 60], [100, 100, 100]) and np.array_equal(out[50, 90], [100, 100, 100])
    with pytest.raises(ValueError, match="masks must be"):
        draw_detections(image, [[0, 0, 5, 5]], [0], [0.9], masks=np.zeros((1, 10, 10), dtype=bool))


def test_tracked_masks_are_filled_in_the_tracks_colour():
    from dfine.imaging.draw import draw_tracks

    image = Image.new("RGB", (120, 90), (100, 100, 100))
    masks = np.zeros((1, 90, 120), dtype=bool)
    masks[0, 20:60, 10:50] = True
    out = np.asarray(draw_tracks(image, [[5, 15, 55, 65]], [0], [5], [0.9], ["person"], masks=masks, line_width=4))
    color = np.array(class_color(5))  # the track's, not the class's
    assert np.all(np.abs(out[40, 30].astype(int) - (0.55 * 100 + 0.45 * color)) <= 1)
    assert np.array_equal(out[40, 10], color)  # outlined
    assert np.array_equal(out[85, 60], [100, 100, 100])
