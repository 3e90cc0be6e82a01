"""Tiled prediction: large images cut into overlapping tiles, each seen at the model's full resolution.

A 4000-pixel aerial photo resized to 640 shrinks a 30-pixel car to 5 pixels, below what any detector finds.
:class:`TiledDetector` predicts every tile (a ``tile`` x ``tile`` window, neighbours overlapping by ``overlap``) and,
for the large objects that tiles cut apart, the whole image too; then merges the detections.

Merging is greedy suppression per class, strongest first, as SAHI does by default: a box is dropped when it
overlaps a stronger box of its class by ``match_threshold`` of the smaller box's area (intersection over the
smaller area, not IoU, because the part of an object that a tile cut off lies wholly inside the complete box found
in the neighbouring tile or the whole image). It works with any detector of :mod:`dfine.predict_files` (the
PyTorch :class:`~dfine.inference.Predictor` or the torch-free :class:`~dfine.runtime.OnnxDetector`), so it needs
only NumPy and Pillow itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dfine.errors import ConfigError, DFineError

__all__ = ["TiledDetector", "suppress_overlaps", "tile_windows"]


def _starts(length: int, tile: int, step: int) -> list[int]:
    """Window starts along one side: every ``step``, the last one moved back to end at the border."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    return [*starts, length - tile]


def tile_windows(width: int, height: int, tile: int, overlap: float = 0.2) -> list[tuple[int, int, int, int]]:
    """Windows ``(x0, y0, x1, y1)`` of at most ``tile`` x ``tile`` pixels that cover a ``width`` x ``height`` image,
    neighbours overlapping by at least ``overlap`` of a tile; one window when the image fits in a tile."""
    step = max(1, int(tile * (1.0 - overlap)))
    return [(x, y, min(x + tile, width), min(y + tile, height))
            for y in _starts(height, tile, step) for x in _starts(width, tile, step)]


def suppress_overlaps(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                      match_threshold: float = 0.5) -> np.ndarray:
    """Indices of the boxes kept, strongest first: per class, a box overlapping a kept, stronger one by at least
    ``match_threshold`` of the smaller box's area is dropped."""
    order = np.argsort(-scores, kind="stable")
    boxes, labels = boxes[order], labels[order]
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    dropped = np.zeros(len(order), dtype=bool)
    kept: list[int] = []
    for i in range(len(order)):
        if dropped[i]:
            continue
        kept.append(int(order[i]))
        later = np.nonzero((labels[i + 1:] == labels[i]) & ~dropped[i + 1:])[0] + i + 1  # one vector step per box
        if len(later):
            width = np.clip(np.minimum(boxes[later, 2], boxes[i, 2]) - np.maximum(boxes[later, 0], boxes[i, 0]), 0,
                            None)
            height = np.clip(np.minimum(boxes[later, 3], boxes[i, 3]) - np.maximum(boxes[later, 1], boxes[i, 1]), 0,
                             None)
            smaller = np.maximum(np.minimum(areas[later], areas[i]), 1e-9)
            dropped[later[width * height / smaller >= match_threshold]] = True
    return np.asarray(kept, dtype=np.int64)


class TiledDetector:
    """A detector that predicts large images tile by tile (see the module docstring).

    Args:
        detector: a :class:`~dfine.inference.Predictor`, an :class:`~dfine.runtime.OnnxDetector`, or anything with
            ``predict(images, threshold)`` and ``class_names``.
        tile: the tile side in pixels of the original image (the model's input size sees each tile at full
            resolution, e.g. 640).
        overlap: how much neighbouring tiles overlap, as a fraction of a tile (0 to 0.9).
        whole_image: also predict the whole image, for objects larger than a tile.
        match_threshold: the overlap (of the smaller box) from which two boxes of a class are one object.
        batch_size: tiles per call of ``detector.predict``.
    """

    def __init__(self, detector: Any, tile: int = 640, overlap: float = 0.2, whole_image: bool = True,
                 match_threshold: float = 0.5, batch_size: int = 8) -> None:
        if isinstance(tile, bool) or not isinstance(tile, int) or tile < 32:
            raise ConfigError(f"the tile size must be an integer of at least 32 pixels, got {tile!r}")
        if not 0.0 <= overlap <= 0.9:
            raise ConfigError(f"the tile overlap must be a fraction from 0 to 0.9, got {overlap!r}")
        if not 0.0 < match_threshold <= 1.0:
            raise ConfigError(f"match_threshold must be in (0, 1], got {match_threshold!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.detector, self.tile, self.overlap = detector, tile, overlap
        self.whole_image, self.match_threshold, self.batch_size = whole_image, match_threshold, batch_size

    @property
    def class_names(self) -> list[str]:
        return self.detector.class_names

    @property
    def dataset_category_ids(self) -> list[int] | None:
        return getattr(self.detector, "dataset_category_ids", None)

    def predict(self, images: Image.Image | str | Path | Sequence[Image.Image | str | Path], threshold: float = 0.5
                ) -> list[dict[str, Any]]:
        """Detections per image (PIL images, paths or URLs): ``boxes`` (K, 4) absolute xyxy, ``scores`` (K,) and
        ``labels`` (K,) as NumPy arrays, strongest first."""
        from dfine.io import load_image

        if isinstance(images, Image.Image | str | Path):
            images = [images]
        pictures = []
        for image in images:
            if isinstance(image, str | Path):
                image = load_image(image)  # a path or URL
            if not isinstance(image, Image.Image):
                raise DFineError(f"tiled prediction takes PIL images, paths or URLs, got {type(image).__name__}")
            pictures.append(image.convert("RGB") if image.mode != "RGB" else image)
        return [self._predict_one(picture, threshold) for picture in pictures]

    def _predict_one(self, image: Image.Image, threshold: float) -> dict[str, Any]:
        windows = tile_windows(image.width, image.height, self.tile, self.overlap)
        if self.whole_image and len(windows) > 1:
            windows.append((0, 0, image.width, image.height))
        boxes, scores, labels = [], [], []
        for first in range(0, len(windows), self.batch_size):
            chunk = windows[first:first + self.batch_size]
            found = self.detector.predict([image.crop(w) for w in chunk], threshold)
            for (x0, y0, _, _), det in zip(chunk, found, strict=True):
                boxes.append(np.asarray(det["boxes"], dtype=np.float64).reshape(-1, 4) + [x0, y0, x0, y0])
                scores.append(np.asarray(det["scores"], dtype=np.float64).reshape(-1))
                labels.append(np.asarray(det["labels"], dtype=np.int64).reshape(-1))
        all_boxes, all_scores, all_labels = np.concatenate(boxes), np.concatenate(scores), np.concatenate(labels)
        keep = suppress_overlaps(all_boxes, all_scores, all_labels, self.match_threshold)
        return {"boxes": all_boxes[keep].reshape(-1, 4), "scores": all_scores[keep], "labels": all_labels[keep]}
