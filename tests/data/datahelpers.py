"""Helpers for the data tests: tiny images and annotation files written into tmp folders.

(A uniquely named module rather than conftest.py: other test folders may have their own conftest.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def write_image(path: Path, width: int = 64, height: int = 48, mode: str = "RGB", value: int = 128) -> Path:
    """Write a flat image of the given size and PIL mode (creates folders)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        image = Image.fromarray(np.full((height, width), value * 256, dtype=np.uint16))
    elif mode == "P":
        image = Image.new("RGB", (width, height), (value,) * 3).quantize()  # a palette holding that grey
    else:
        image = Image.new(mode, (width, height), value if mode == "L" else (value,) * len(mode))
    image.save(path)
    return path


def write_coco(
    folder: Path,
    images: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
    categories: list[dict[str, Any]] | None = None,
    name: str = "instances.json",
    make_images: bool = True,
) -> Path:
    """Write a COCO JSON (and, by default, a flat image file for every image entry) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    if make_images:
        for image in images:
            write_image(folder / image["file_name"], image["width"], image["height"])
    categories = categories if categories is not None else [{"id": 1, "name": "thing"}]
    path = folder / name
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def box_annotation(ann_id: int, image_id: int, bbox: list[float], category_id: int = 1, **extra: Any) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, **extra}


def write_yolo(root: Path, labels: dict[str, str], names: list[str] | dict[int, str], size=(64, 48)) -> Path:
    """A YOLO data set with one train image per ``labels`` entry (file stem -> label file text) and one val image."""
    for stem, text in labels.items():
        write_image(root / "images" / "train" / f"{stem}.png", *size)
        (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
        (root / "labels" / "train" / f"{stem}.txt").write_text(text)
    write_image(root / "images" / "val" / "v.png", *size)
    (root / "labels" / "val").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "val" / "v.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    data = root / "data.yaml"
    data.write_text(json.dumps({"train": "images/train", "val": "images/val", "names": names}))  # JSON is YAML
    return data
