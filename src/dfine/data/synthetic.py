"""A small synthetic detection data set: coloured circles, squares and triangles on a noisy background.

Used by ``dfine demo`` (a few minutes of CPU training of the smallest model learns it: the objects are large, solid
and told apart by shape, not colour) and by the tests (both formats from the same seed hold identical images and
boxes). Deterministic for a given seed. With ``masks=True`` every object also gets its outline as a polygon (COCO
``segmentation``, YOLO-seg lines), for instance segmentation; the images are the same.
"""

from __future__ import annotations

import colorsys
import json
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from PIL import Image, ImageDraw

from dfine.ops.numpy_boxes import iou_matrix

CLASS_NAMES = ("circle", "square", "triangle")
# COCO category ids are 1-based, as in most COCO exports, so the demo exercises the id -> label mapping.
_COCO_CATEGORY_IDS = (1, 2, 3)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    # Greyish, weakly tinted colours with smooth blotches and pixel noise: texture the model must learn to ignore,
    # kept far less saturated than the objects.
    base = rng.uniform(70, 180) + rng.normal(0, 12, size=3)
    coarse = rng.normal(0, 20, size=(4, 4, 3)).astype(np.float32)
    smooth = np.stack(
        [np.asarray(Image.fromarray(coarse[..., c]).resize((w, h), Image.Resampling.BILINEAR)) for c in range(3)],
        axis=-1,
    )
    noise = rng.normal(0, 10, size=(h, w, 3))
    return np.clip(base + smooth + noise, 0, 255).astype(np.uint8)


def draw_sample(
    rng: np.random.Generator, height: int, width: int, empty_fraction: float = 0.1
) -> tuple[Image.Image, list[tuple[int, tuple[int, int, int, int]]]]:
    """Draw one image and its objects.

    Returns:
        The RGB image and a list of ``(class index, (x1, y1, x2, y2))`` integer pixel boxes (exclusive ends).
    """
    image = Image.fromarray(_background(rng, height, width))
    draw = ImageDraw.Draw(image)
    count = 0 if rng.random() < empty_fraction else int(rng.integers(1, 5))
    objects: list[tuple[int, tuple[int, int, int, int]]] = []
    short = min(height, width)
    for _ in range(count):
        for _attempt in range(20):  # keep objects mostly unoccluded so every box shows its shape
            size = int(rng.uniform(0.18, 0.42) * short)
            x, y = int(rng.integers(0, width - size + 1)), int(rng.integers(0, height - size + 1))
            box = (x, y, x + size, y + size)
            others = np.asarray([other for _, other in objects]).reshape(-1, 4)
            if iou_matrix(np.asarray([box]), others).max(initial=0.0) < 0.1:
                break
        else:
            continue
        label = int(rng.integers(len(CLASS_NAMES)))
        hue, saturation, value = rng.random(), rng.uniform(0.7, 1.0), rng.uniform(0.75, 1.0)
        colour = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, saturation, value))
        last_x, last_y = x + size - 1, y + size - 1  # PIL includes the end pixel
        if CLASS_NAMES[label] == "circle":
            draw.ellipse((x, y, last_x, last_y), fill=colour)
        elif CLASS_NAMES[label] == "square":
            draw.rectangle((x, y, last_x, last_y), fill=colour)
        else:
            draw.polygon([((x + last_x) / 2, y), (x, last_y), (last_x, last_y)], fill=colour)
        objects.append((label, box))
    return image, objects


# Corners of the polygon that outlines a circle: enough that its area is within 1 % of the disc's.
_CIRCLE_POINTS = 32


def shape_polygon(label: int, box: tuple[int, int, int, int]) -> list[float]:
    """The outline of a drawn object as ``[x1, y1, x2, y2, ...]`` in pixels (pixel edges, so the square's polygon is
    its box): a circle as a :data:`_CIRCLE_POINTS`-gon, a square's four corners, a triangle's three."""
    x1, y1, x2, y2 = box
    name = CLASS_NAMES[label]
    if name == "square":
        points = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
    elif name == "triangle":
        points = [((x1 + x2) / 2, y1), (x2, y2), (x1, y2)]
    else:
        angles = np.linspace(0, 2 * np.pi, _CIRCLE_POINTS, endpoint=False)
        cx, cy, radius = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2
        points = list(zip((cx + radius * np.cos(angles)).tolist(), (cy + radius * np.sin(angles)).tolist(),
                          strict=True))
    return [round(float(v), 2) for point in points for v in point]


def _write_coco(root: Path, split: str, samples: list[tuple[str, int, int, list]], masks: bool) -> dict[str, str]:
    images: list[dict] = []
    annotations: list[dict] = []
    for image_id, (file_name, h, w, objects) in enumerate(samples):
        images.append({"id": image_id, "file_name": file_name, "width": w, "height": h})
        for label, (x1, y1, x2, y2) in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": _COCO_CATEGORY_IDS[label],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
            if masks:
                annotations[-1]["segmentation"] = [shape_polygon(label, (x1, y1, x2, y2))]
    categories = [
        {"id": i, "name": n, "supercategory": "shape"} for i, n in zip(_COCO_CATEGORY_IDS, CLASS_NAMES, strict=True)
    ]
    ann_file = root / "annotations" / f"instances_{split}.json"
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return {"images": f"images/{split}", "annotations": f"annotations/instances_{split}.json"}


def _yolo_polygon_line(label: int, box: tuple[int, int, int, int], h: int, w: int) -> str:
    coords = shape_polygon(label, box)
    return f"{label} " + " ".join(f"{v / (w if i % 2 == 0 else h):.6f}" for i, v in enumerate(coords))


def _write_yolo_labels(root: Path, split: str, samples: list[tuple[str, int, int, list]], masks: bool) -> None:
    label_dir = root / "labels" / split
    label_dir.mkdir(parents=True, exist_ok=True)
    for file_name, h, w, objects in samples:
        lines = [
            _yolo_polygon_line(label, (x1, y1, x2, y2), h, w) if masks else
            f"{label} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
            for label, (x1, y1, x2, y2) in objects
        ]
        (label_dir / Path(file_name).with_suffix(".txt")).write_text("".join(line + "\n" for line in lines))


def make_synthetic_dataset(
    root: str | Path,
    num_train: int = 200,
    num_val: int = 40,
    image_size: tuple[int, int] = (256, 256),
    format: Literal["coco", "yolo"] = "coco",
    seed: int = 0,
    *,
    empty_fraction: float = 0.1,
    image_format: Literal["jpg", "png"] = "jpg",
    masks: bool = False,
) -> Path:
    """Write a ready-to-train synthetic data set of 3 shape classes (1-4 objects per image).

    COCO layout: ``images/{train,val}/``, ``annotations/instances_{train,val}.json`` (category ids 1..3) and a
    ``data.yaml`` naming them. YOLO layout: ``images/{train,val}/``, ``labels/{train,val}/`` and a ``data.yaml``.
    The images and boxes depend only on ``seed``, ``image_size``, the counts and ``empty_fraction``, not on
    ``format``.

    Args:
        root: output folder (created; existing files with the same names are overwritten).
        num_train, num_val: images per split.
        image_size: ``(height, width)`` of every image.
        format: ``"coco"`` or ``"yolo"``.
        seed: random seed.
        empty_fraction: share of images without any object.
        image_format: ``"jpg"`` (smaller) or ``"png"`` (lossless).
        masks: also write each object's outline polygon (:func:`shape_polygon`): COCO ``segmentation``, YOLO-seg
            lines ``class x1 y1 x2 y2 ...`` instead of box lines.

    Returns:
        The ``data.yaml`` to pass as ``--data``.
    """
    if format not in ("coco", "yolo"):
        raise ValueError(f"format must be 'coco' or 'yolo', got {format!r}")
    root = Path(root)
    height, width = image_size
    config: dict[str, object] = {}
    for split_number, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        rng = np.random.default_rng([seed, split_number])
        image_dir = root / "images" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        samples = []
        for i in range(count):
            image, objects = draw_sample(rng, height, width, empty_fraction)
            file_name = f"{split}_{i:05d}.{image_format}"
            if image_format == "jpg":
                image.save(image_dir / file_name, quality=92)
            else:
                image.save(image_dir / file_name)
            samples.append((file_name, height, width, objects))
        if format == "coco":
            config[split] = _write_coco(root, split, samples, masks)
        else:
            _write_yolo_labels(root, split, samples, masks)
            config[split] = f"images/{split}"
    if format == "yolo":
        config["names"] = list(CLASS_NAMES)
    data_yaml = root / "data.yaml"
    data_yaml.write_text(yaml.safe_dump(config, sort_keys=False))
    return data_yaml
