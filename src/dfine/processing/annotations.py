"""COCO detection annotations -> training targets, as transformers' RT-DETR / D-FINE image processors build them.

:class:`dfine.processing.processor.DFineImageProcessor` calls these when given ``annotations=``. The arithmetic follows
transformers step by step (float32 numpy, same order of operations), so the ``labels`` it returns equal
``RTDetrImageProcessor(...)(images, annotations=...)["labels"]``:

1. :func:`coco_to_target`: crowd objects (``iscrowd`` != 0) are dropped; ``bbox`` (x, y, w, h) becomes corners,
   clipped to the image; boxes left with no width or height are dropped. ``area`` is kept as given (not clipped).
2. :func:`resize_target`: boxes scale with the stretch resize, areas by the product of the two ratios.
3. :func:`normalize_target` (``do_convert_annotations``): corners -> (cx, cy, w, h) divided by the image size.
4. :func:`pad_target` (``do_pad``): normalised boxes are rescaled to the padded canvas (bottom/right padding).

Targets are dicts of numpy arrays: ``image_id`` (1,) int64, ``class_labels`` (N,) int64, ``boxes`` (N, 4) float32,
``area`` (N,) float32, ``iscrowd`` (N,) int64, ``orig_size`` (2,) int64 (height, width), and ``size`` (2,) int64
only once a resize or padding set it (transformers leaves it out otherwise).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dfine.errors import DFineError

__all__ = ["check_annotations", "coco_to_target", "normalize_target", "pad_target", "resize_target"]

Target = dict[str, np.ndarray]


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    """Integral values, including floats such as 3.0 (transformers casts with ``as_tensor(..., int64)``)."""
    return _is_number(value) and float(value).is_integer()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_object(obj: Any, where: str) -> None:
    """One COCO object: ``bbox`` of 4 numbers, integral ``category_id``, numeric ``area``."""
    if not isinstance(obj, Mapping):
        raise DFineError(f"{where}: expected a dict with 'bbox', 'category_id' and 'area', got {_short(obj)}")
    for key in ("bbox", "category_id", "area"):
        if key not in obj:
            raise DFineError(f"{where}: missing {key!r}")
    bbox = obj["bbox"]
    if isinstance(bbox, np.ndarray):
        bbox = bbox.tolist()
    if isinstance(bbox, (str, bytes)) or not isinstance(bbox, Sequence) or len(bbox) != 4:
        raise DFineError(f"{where}: 'bbox' must be 4 numbers [x, y, width, height], got {_short(obj['bbox'])}")
    if not all(_is_number(v) for v in bbox):
        raise DFineError(f"{where}: 'bbox' must be 4 numbers [x, y, width, height], got {_short(obj['bbox'])}")
    if not _is_integer(obj["category_id"]):
        raise DFineError(f"{where}: 'category_id' must be an integer, got {_short(obj['category_id'])}")
    if not _is_number(obj["area"]):
        raise DFineError(f"{where}: 'area' must be a number, got {_short(obj['area'])}")


def check_annotations(annotations: Any, num_images: int) -> list[Mapping[str, Any]]:
    """Validate COCO detection annotations (one dict, or one per image) and return them as a list.

    Raises:
        DFineError: a one-line message naming the image (and object) index and the problem.
    """
    items = [annotations] if isinstance(annotations, Mapping) else annotations
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise DFineError(
            "annotations must be a dict {'image_id', 'annotations'} or a list of them (one per image), "
            f"got {type(annotations).__name__}"
        )
    items = list(items)
    if len(items) != num_images:
        raise DFineError(f"{num_images} image(s) but {len(items)} annotation(s): give one dict per image")
    for index, item in enumerate(items):
        where = f"annotations for image {index}"
        if not isinstance(item, Mapping):
            raise DFineError(f"{where}: expected a dict with 'image_id' and 'annotations', got {_short(item)}")
        for key in ("image_id", "annotations"):
            if key not in item:
                raise DFineError(f"{where}: missing {key!r}")
        if not _is_integer(item["image_id"]):
            raise DFineError(f"{where}: 'image_id' must be an integer, got {_short(item['image_id'])}")
        objects = item["annotations"]
        if isinstance(objects, (str, bytes, Mapping)) or not isinstance(objects, Sequence):
            raise DFineError(f"{where}: 'annotations' must be a list of COCO objects, got {_short(objects)}")
        for number, obj in enumerate(objects):
            _check_object(obj, f"image {index}, annotation {number}")
    return items


def coco_to_target(annotation: Mapping[str, Any], image_size: tuple[int, int]) -> Target:
    """A validated COCO image annotation -> target in pixels of the original image (corners, clipped)."""
    height, width = image_size
    # transformers keeps objects without "iscrowd" and those with iscrowd == 0; the others are dropped.
    objects = [obj for obj in annotation["annotations"] if obj.get("iscrowd", 0) == 0]
    classes = np.asarray([int(obj["category_id"]) for obj in objects], dtype=np.int64)
    area = np.asarray([obj["area"] for obj in objects], dtype=np.float32)
    boxes = np.asarray([list(obj["bbox"]) for obj in objects], dtype=np.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    boxes[:, 0::2] = boxes[:, 0::2].clip(min=0, max=width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(min=0, max=height)
    # Boxes outside the image (or degenerate, or NaN) have no extent left after clipping: dropped.
    keep = (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 2] > boxes[:, 0])
    return {
        "image_id": np.asarray([int(annotation["image_id"])], dtype=np.int64),
        "class_labels": classes[keep],
        "boxes": boxes[keep],
        "area": area[keep],
        "iscrowd": np.zeros(int(keep.sum()), dtype=np.int64),
        "orig_size": np.asarray([int(height), int(width)], dtype=np.int64),
    }


def _with_size(target: Target, size: tuple[int, int]) -> Target:
    """``size`` first, as transformers orders the keys after a resize or a pad."""
    rest = {key: value for key, value in target.items() if key != "size"}
    return {"size": np.asarray([int(size[0]), int(size[1])], dtype=np.int64), **rest}


def resize_target(target: Target, orig_size: tuple[int, int], new_size: tuple[int, int]) -> Target:
    """Scale boxes and areas for a stretch resize from ``orig_size`` to ``new_size`` (both (height, width))."""
    ratio_height, ratio_width = (float(new) / float(old) for new, old in zip(new_size, orig_size))
    resized = _with_size(target, new_size)
    ratios = np.asarray([ratio_width, ratio_height, ratio_width, ratio_height], dtype=np.float32)
    resized["boxes"] = target["boxes"] * ratios
    # The area ratio is the float64 product, applied to float32 areas (as transformers does).
    resized["area"] = target["area"] * (ratio_width * ratio_height)
    return resized


def normalize_target(target: Target, image_size: tuple[int, int]) -> Target:
    """Corner boxes in pixels -> (cx, cy, w, h) as fractions of ``image_size`` (height, width)."""
    height, width = image_size
    x0, y0, x1, y1 = target["boxes"].T
    center = np.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=-1).reshape(-1, 4)
    return {**target, "boxes": center / np.asarray([width, height, width, height], dtype=np.float32)}


def pad_target(target: Target, input_size: tuple[int, int], padded_size: tuple[int, int], update_boxes: bool) -> Target:
    """Update a target for bottom/right padding from ``input_size`` to ``padded_size``.

    Normalised boxes (``update_boxes``) shrink by input/padded so they still cover the same pixels; boxes in pixels
    are unchanged by padding at the bottom and right.
    """
    padded = _with_size(target, padded_size)
    if update_boxes:
        scale = np.asarray([input_size[1] / padded_size[1], input_size[0] / padded_size[0]] * 2)
        padded["boxes"] = (target["boxes"] * scale).astype(np.float32)
    return padded
