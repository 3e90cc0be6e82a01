"""Drawing detections and ground truth on images, and putting pictures side by side.

Everything works with PIL alone: text uses PIL's built-in font (scalable on Pillow >= 10.1, a small bitmap font
before that), so no font file has to be installed. Inputs are never modified; every function returns a new image.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dfine.imaging.inputs import is_tensor, tensor_to_numpy

__all__ = ["class_color", "draw_batch", "draw_detections", "draw_ground_truth", "draw_tracks", "make_grid",
           "shrink_to_fit"]

# Twenty saturated, mutually distinct colours that stay readable on photos (chosen by hand for this project).
_PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (255, 215, 0), (0, 128, 128),
    (170, 110, 40), (128, 0, 0), (0, 0, 128), (255, 100, 160), (100, 200, 150),
    (128, 128, 0), (90, 90, 255), (255, 160, 120), (0, 200, 90), (200, 160, 255),
)  # fmt: skip

Names = Sequence[str] | Mapping[int, str] | None


def class_color(label: int) -> tuple[int, int, int]:
    """A stable RGB colour for a class index: the palette first, then golden-ratio hues so neighbours differ."""
    label = int(label)
    if 0 <= label < len(_PALETTE):
        return _PALETTE[label]
    hue = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.8, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def _text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    # Perceived luminance (ITU-R BT.601 weights) decides between black and white text.
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _style(width: int, height: int) -> tuple[int, int]:
    """Line width and font size grow with the image's linear size (2 px / 12 px at 640×480)."""
    scale = math.sqrt(width * height)
    return max(2, round(scale / 280)), max(12, round(scale / 45))


def _as_numpy(values: Any, columns: int | None = None) -> np.ndarray:
    if is_tensor(values):
        values = tensor_to_numpy(values)
    array = np.asarray(values if values is not None else [])
    return array.reshape(-1, columns) if columns else array.reshape(-1)


def _class_name(label: int, class_names: Names) -> str:
    if class_names is None:
        return str(label)
    try:
        return str(class_names[label])
    except (KeyError, IndexError):
        return str(label)


def _dashed_rectangle(draw: ImageDraw.ImageDraw, box: Sequence[float], color: tuple, width: int) -> None:
    x1, y1, x2, y2 = box
    dash = 4 * width
    for (ax, ay), (bx, by) in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = math.hypot(bx - ax, by - ay)
        if length == 0:
            continue
        for start in np.arange(0.0, length, 2 * dash):
            s, e = start / length, min(start + dash, length) / length
            draw.line([(ax + (bx - ax) * s, ay + (by - ay) * s), (ax + (bx - ax) * e, ay + (by - ay) * e)],
                      fill=color, width=width)  # fmt: skip


def _with_bands(canvas: Image.Image, boxes: np.ndarray, edges: np.ndarray, colors: np.ndarray,
                shown: np.ndarray) -> Image.Image:
    """``canvas`` with a translucent band of ±σ around each edge of the ``shown`` boxes (σ: ``edges``, per edge
    left, top, right, bottom, in pixels): where the model is unsure of an edge, its band is wide."""
    if len(edges) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(edges)} edge uncertainties")
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for i in np.flatnonzero(shown):
        (x1, y1, x2, y2), (left, top, right, bottom) = boxes[i], np.nan_to_num(edges[i]).clip(0, None)
        fill = (*class_color(colors[i]), 96)
        for band in ((x1 - left, y1, x1 + left, y2), (x2 - right, y1, x2 + right, y2),
                     (x1, y1 - top, x2, y1 + top), (x1, y2 - bottom, x2, y2 + bottom)):
            if band[2] > band[0] and band[3] > band[1]:
                draw.rectangle(band, fill=fill)
    return Image.alpha_composite(canvas.convert("RGBA"), overlay).convert("RGB")


# How much of the class colour a mask's pixels take: the picture stays readable under it.
_MASK_OPACITY = 0.45


def _shrunk(mask: np.ndarray) -> np.ndarray:
    """``mask`` without its boundary pixels (those with a 4-neighbour outside it; beyond the array is outside)."""
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    inner[0], inner[-1], inner[:, 0], inner[:, -1] = False, False, False, False
    return inner


def _with_masks(canvas: Image.Image, masks: Any, colors: np.ndarray, order: np.ndarray, shown: np.ndarray,
                outline: int) -> Image.Image:
    """``canvas`` with each ``shown`` instance mask (K, H, W) filled translucently in its colour and outlined
    ``outline`` pixels wide, in ``order`` (later ones on top)."""
    array = tensor_to_numpy(masks) if is_tensor(masks) else np.asarray(masks)
    width, height = canvas.size
    if array.ndim != 3 or array.shape[0] != len(colors) or array.shape[1:] != (height, width):
        raise ValueError(f"masks must be ({len(colors)}, {height}, {width}) for {len(colors)} detections on a "
                         f"{width}x{height} picture, got shape {array.shape}")
    pixels = np.asarray(canvas, dtype=np.float32).copy()
    for i in order:
        mask = array[i].astype(bool, copy=False)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if not shown[i] or len(rows) == 0:
            continue
        # only the mask's own bounding rectangle is touched (a whole-picture pass per instance is slow on video)
        window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        region, part = pixels[window], mask[window]
        color = np.asarray(class_color(colors[i]), dtype=np.float32)
        region[part] = region[part] * (1.0 - _MASK_OPACITY) + color * _MASK_OPACITY
        inner = part
        for _ in range(outline):
            inner = _shrunk(inner)
        region[part & ~inner] = color
    return Image.fromarray(np.rint(pixels).astype(np.uint8))


def _draw(
    image: Image.Image,
    boxes: Any,
    labels: Any,
    scores: Any,
    class_names: Names,
    threshold: float,
    dashed: bool,
    line_width: int | None,
    font_size: int | None,
    bands: Any = None,
    colors: Any = None,
    texts: Sequence[str] | None = None,
    masks: Any = None,
) -> Image.Image:
    """Outlines and tags; ``bands``: σ per edge to show around the boxes; ``colors``: the keys that pick each box's
    colour (default its label); ``texts``: each box's tag (default its class name and score); ``masks``: (N, H, W)
    instance masks filled under the boxes."""
    canvas = image.convert("RGB")  # always a new image, so the caller's stays untouched
    width, height = canvas.size
    default_line, default_font = _style(width, height)
    line_width = line_width or default_line
    font = _font(font_size or default_font)
    boxes_np = _as_numpy(boxes, 4).astype(np.float64)
    labels_np = _as_numpy(labels).astype(np.int64)
    scores_np = _as_numpy(scores).astype(np.float64) if scores is not None else None
    if len(labels_np) != len(boxes_np) or (scores_np is not None and len(scores_np) != len(boxes_np)):
        raise ValueError(f"{len(boxes_np)} boxes but {len(labels_np)} labels / {len(_as_numpy(scores))} scores")
    colors_np = labels_np if colors is None else _as_numpy(colors).astype(np.int64)
    shown = np.ones(len(boxes_np), dtype=bool) if scores_np is None else scores_np >= threshold
    order = np.arange(len(boxes_np)) if scores_np is None else np.argsort(scores_np, kind="stable")
    if masks is not None:
        canvas = _with_masks(canvas, masks, colors_np, order, shown, max(1, line_width // 2))
    if bands is not None:
        canvas = _with_bands(canvas, boxes_np, _as_numpy(bands, 4).astype(np.float64), colors_np, shown)

    draw = ImageDraw.Draw(canvas)
    tags = []
    for i in order:  # lowest score first, so the most confident boxes end up on top
        if not shown[i]:
            continue
        x1, y1, x2, y2 = boxes_np[i]
        if not np.isfinite(boxes_np[i]).all() or x2 < 0 or y2 < 0 or x1 > width - 1 or y1 > height - 1:
            continue  # nothing of the box is visible
        # Clip so boxes that run off the image still show their visible edges.
        box = (max(x1, 0.0), max(y1, 0.0), min(max(x2, x1), width - 1.0), min(max(y2, y1), height - 1.0))
        color = class_color(colors_np[i])
        if dashed:
            _dashed_rectangle(draw, box, color, line_width)
        else:
            draw.rectangle(box, outline=color, width=line_width)
        if texts is not None:
            text = texts[i]
        else:
            text = _class_name(int(labels_np[i]), class_names)
            if scores_np is not None:
                text += f" {scores_np[i]:.2f}"
        tags.append((box, color, text))

    # Tags after all outlines, so no box line crosses a label.
    pad = max(1, line_width)
    for (x1, y1, _x2, _y2), color, text in tags:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tag_w, tag_h = right - left + 2 * pad, bottom - top + 2 * pad
        tag_x = min(max(x1, 0), max(width - tag_w, 0))
        tag_y = y1 - tag_h if y1 - tag_h >= 0 else y1  # above the box when it fits, else just inside it
        tag_y = min(max(tag_y, 0), max(height - tag_h, 0))
        draw.rectangle((tag_x, tag_y, tag_x + tag_w - 1, tag_y + tag_h - 1), fill=color)
        draw.text((tag_x + pad - left, tag_y + pad - top), text, fill=_text_color(color), font=font)
    return canvas


def draw_detections(
    image: Image.Image,
    boxes: Any,
    labels: Any,
    scores: Any = None,
    class_names: Names = None,
    threshold: float = 0.0,
    line_width: int | None = None,
    font_size: int | None = None,
    edge_uncertainty: Any = None,
    masks: Any = None,
) -> Image.Image:
    """Draw detections as solid boxes with a filled "name 0.93" tag per box, and instance masks under them.

    Args:
        image: the picture (any PIL mode; the result is RGB).
        boxes: (N, 4) absolute (x1, y1, x2, y2) pixels (tensor, array or nested lists). Boxes partly outside the
            image are clipped; boxes entirely outside are skipped.
        labels: (N,) class indices; they pick the colour (:func:`class_color`).
        scores: (N,) confidences, or None to draw names only.
        class_names: list or dict label -> name; missing labels show the number.
        threshold: draw only detections with ``score >= threshold``.
        line_width: outline width in pixels (default grows with the image size).
        font_size: text height in pixels (default grows with the image size).
        edge_uncertainty: (N, 4) the σ of each box's left, top, right and bottom edge in pixels
            (:mod:`dfine.ops.uncertainty`), drawn as a translucent band of ±σ around the edge; None draws none.
        masks: (N, H, W) boolean instance masks at the picture's size (a segmentation model's), each filled
            translucently in its class colour and outlined; None draws none.

    Returns:
        A new RGB image of the same size.
    """
    return _draw(image, boxes, labels, scores, class_names, threshold, False, line_width, font_size,
                 bands=edge_uncertainty, masks=masks)


def draw_tracks(
    image: Image.Image,
    boxes: Any,
    labels: Any,
    track_ids: Sequence[int],
    scores: Any = None,
    class_names: Names = None,
    trails: Mapping[int, Sequence[tuple[float, float]]] | None = None,
    edge_uncertainty: Any = None,
    line_width: int | None = None,
    font_size: int | None = None,
    masks: Any = None,
) -> Image.Image:
    """Draw tracked objects: each box in its track's colour with a "#id name 0.93" tag, and its trail.

    Args:
        image: the frame.
        boxes: (N, 4) absolute (x1, y1, x2, y2) pixels.
        labels: (N,) class indices (for the names).
        track_ids: (N,) each box's track id; the id picks the colour, so an object keeps its colour.
        scores: (N,) confidences, or None.
        class_names: list or dict label -> name.
        trails: track id -> the recent positions (x, y) of that track, oldest first, drawn as a line.
        edge_uncertainty: (N, 4) σ per edge in pixels, drawn as bands (as :func:`draw_detections`).
        line_width: outline width in pixels (default grows with the image size).
        font_size: text height in pixels (default grows with the image size).
        masks: (N, H, W) boolean instance masks at the frame's size (a segmentation model's), each filled and
            outlined in its track's colour.

    Returns:
        A new RGB image of the same size.
    """
    ids = [int(i) for i in _as_numpy(track_ids).tolist()]
    label_list = _as_numpy(labels).astype(np.int64).tolist()
    score_list = _as_numpy(scores).astype(np.float64).tolist() if scores is not None else None
    texts = [f"#{track} {_class_name(label, class_names)}" + (f" {score_list[i]:.2f}" if score_list else "")
             for i, (track, label) in enumerate(zip(ids, label_list, strict=True))]
    canvas = image.convert("RGB")
    width = line_width or _style(*canvas.size)[0]
    draw = ImageDraw.Draw(canvas)
    for track, points in (trails or {}).items():
        if len(points) > 1:
            draw.line([(float(x), float(y)) for x, y in points], fill=class_color(track), width=width,
                      joint="curve")
    return _draw(canvas, boxes, labels, scores, class_names, 0.0, False, line_width, font_size,
                 bands=edge_uncertainty, colors=ids, texts=texts, masks=masks)


def draw_ground_truth(
    image: Image.Image,
    boxes: Any,
    labels: Any,
    class_names: Names = None,
    line_width: int | None = None,
    font_size: int | None = None,
) -> Image.Image:
    """Draw ground-truth boxes dashed, tagged with the class name only (same colours as detections).

    Args:
        image: the picture.
        boxes: (N, 4) absolute (x1, y1, x2, y2) pixels.
        labels: (N,) class indices.
        class_names: list or dict label -> name.
        line_width: outline width in pixels (default grows with the image size).
        font_size: text height in pixels (default grows with the image size).

    Returns:
        A new RGB image of the same size.
    """
    return _draw(image, boxes, labels, None, class_names, 0.0, True, line_width, font_size)


def make_grid(
    images: Sequence[Image.Image],
    columns: int = 2,
    titles: Sequence[str] | None = None,
    padding: int = 8,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Put pictures side by side in a grid, each centred in a cell as large as the largest picture.

    Args:
        images: the pictures (not resized).
        columns: cells per row.
        titles: optional caption per picture, written above it.
        padding: gap between cells and around the grid, in pixels.
        background: fill colour of the gaps.

    Returns:
        One RGB image of ``rows × columns`` cells.
    """
    if not images:
        raise ValueError("make_grid needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(images)} images but {len(titles)} titles")
    columns = max(1, min(int(columns), len(images)))
    rows = math.ceil(len(images) / columns)
    cell_w = max(im.width for im in images)
    cell_h = max(im.height for im in images)
    font = _font(_style(cell_w, cell_h)[1])
    title_h = 0
    if titles:
        probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        title_h = max(probe.textbbox((0, 0), t, font=font)[3] for t in titles) + padding
    grid = Image.new(
        "RGB",
        (columns * cell_w + (columns + 1) * padding, rows * (cell_h + title_h) + (rows + 1) * padding),
        background,
    )
    draw = ImageDraw.Draw(grid)
    for index, picture in enumerate(images):
        row, column = divmod(index, columns)
        x0 = padding + column * (cell_w + padding)
        y0 = padding + row * (cell_h + title_h + padding)
        if titles:
            draw.text((x0, y0), titles[index], fill=_text_color(background), font=font)
        grid.paste(
            picture.convert("RGB"),
            (x0 + (cell_w - picture.width) // 2, y0 + title_h + (cell_h - picture.height) // 2),
        )
    return grid


def shrink_to_fit(picture: Image.Image, size: int) -> tuple[Image.Image, float]:
    """``picture`` shrunk (never enlarged) so that its longer side is at most ``size`` pixels, and the scale used;
    for grids of many pictures that should stay a few megapixels."""
    scale = min(1.0, size / max(picture.width, picture.height))
    if scale < 1.0:
        picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                                 Image.BILINEAR)
    return picture, scale


def draw_batch(
    pixel_values: Any,
    targets: Sequence[Mapping[str, Any]],
    class_names: Names = None,
    max_images: int = 16,
    columns: int = 4,
    cell_size: int = 400,
) -> Image.Image:
    """A training batch as the model sees it: each image after augmentation, with its target boxes.

    Args:
        pixel_values: (B, 3, H, W) in [0, 1], as the training loader yields them (a torch tensor or numpy array).
        targets: per image ``{"class_labels": (n,), "boxes": (n, 4)}`` with boxes normalised ``(cx, cy, w, h)``.
        class_names: list or dict label -> name.
        max_images: the first this many images of the batch are drawn.
        columns: cells per row.
        cell_size: an image larger than this (its longer side, in pixels) is shrunk to it first.

    Returns:
        One RGB image: the grid, each cell titled with its index in the batch and its box count.
    """
    pictures, titles = [], []
    for index in range(min(len(targets), int(max_images))):
        values = pixel_values[index]
        values = np.asarray(tensor_to_numpy(values) if is_tensor(values) else values, dtype=np.float32)
        array = np.rint(np.clip(values, 0, 1) * 255).astype(np.uint8)
        picture, _ = shrink_to_fit(Image.fromarray(np.ascontiguousarray(array.transpose(1, 2, 0))), cell_size)
        target = targets[index]
        cx, cy, w, h = _as_numpy(target["boxes"], columns=4).T
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        boxes *= np.array([picture.width, picture.height] * 2, dtype=boxes.dtype)
        labels = _as_numpy(target["class_labels"]).astype(np.int64)
        pictures.append(draw_ground_truth(picture, boxes, labels, class_names))
        titles.append(f"{index}: {len(labels)} box{'es' if len(labels) != 1 else ''}")
    if not pictures:
        raise ValueError("draw_batch needs at least one image")
    return make_grid(pictures, columns=columns, titles=titles)
