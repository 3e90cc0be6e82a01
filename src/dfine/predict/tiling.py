"""Tiled prediction: large images cut into overlapping tiles, each seen at the model's full resolution.

A 4000-pixel aerial photo resized to 640 shrinks a 30-pixel car to 5 pixels, below what any detector finds.
:class:`TiledDetector` predicts every tile (a ``tile`` x ``tile`` window, neighbours overlapping by ``overlap``) and,
for the large objects that tiles cut apart, the whole image too; then merges the detections.

Merging is greedy and per class, as SAHI's default (greedy NMM): a box that overlaps a kept box of its class by
``match_threshold`` of the smaller box's area is merged into it, the kept box growing to hold both. The overlap is
measured on the smaller box (not IoU) because a tile sees only part of an object that crosses its border, and that
part lies inside the complete box found in a neighbouring tile or the whole image. Boxes that touch a tile's border
inside the image are such parts, and they may score higher than the complete box: so complete boxes are kept
first, strongest first, and cut-off parts come after them. It works with any detector of :mod:`dfine.predict.files`
(the PyTorch :class:`~dfine.predict.predictor.Predictor` or the torch-free
:class:`~dfine.runtime.onnx.OnnxDetector`), so it needs only NumPy and Pillow itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dfine.errors import ConfigError, DFineError
from dfine.ops.numpy_boxes import box_areas, intersection_areas

__all__ = ["TiledDetector", "cut_by_tile", "merge_overlaps", "tile_windows"]


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


def merge_overlaps(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, match_threshold: float = 0.5,
                   cut: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy merging per class: each kept box absorbs the later boxes of its class that overlap it by at least
    ``match_threshold`` of the smaller box's area, and becomes the smallest box holding them all. Boxes are taken
    strongest first, those flagged in ``cut`` (parts of objects cut off by a tile border) after all the others.
    Returns the kept ``(boxes, scores, labels)``, strongest first (a kept box keeps its own score)."""
    flags = np.zeros(len(scores), dtype=bool) if cut is None else np.asarray(cut, dtype=bool)
    order = np.lexsort((-scores, flags))  # complete boxes first, then by score
    boxes, scores, labels = boxes[order].astype(np.float64), scores[order], labels[order]
    areas = box_areas(boxes)
    absorbed = np.zeros(len(order), dtype=bool)
    kept: list[int] = []
    merged: list[np.ndarray] = []
    for i in range(len(order)):
        if absorbed[i]:
            continue
        later = np.nonzero((labels[i + 1:] == labels[i]) & ~absorbed[i + 1:])[0] + i + 1  # one vector step per box
        shared = intersection_areas(boxes[later], boxes[i:i + 1])[:, 0]
        smaller = np.maximum(np.minimum(areas[later], areas[i]), 1e-9)
        matched = later[shared / smaller >= match_threshold]
        absorbed[matched] = True
        group = boxes[np.concatenate([[i], matched])]
        kept.append(i)
        merged.append(np.concatenate([group[:, :2].min(axis=0), group[:, 2:].max(axis=0)]))
    index = np.asarray(kept, dtype=np.int64)
    strongest = np.argsort(-scores[index], kind="stable")
    return (np.asarray(merged, dtype=np.float64).reshape(-1, 4)[strongest], scores[index][strongest],
            labels[index][strongest])


def cut_by_tile(boxes: np.ndarray, window: tuple[int, int, int, int], width: int, height: int,
                margin: float) -> np.ndarray:
    """Which ``boxes`` (image coordinates) reach within ``margin`` pixels of a border of ``window`` that lies inside
    the image: the parts of objects that the tile cut off (an object touching the image's own border is whole)."""
    x0, y0, x1, y1 = window
    return (((boxes[:, 0] <= x0 + margin) & (x0 > 0)) | ((boxes[:, 1] <= y0 + margin) & (y0 > 0))
            | ((boxes[:, 2] >= x1 - margin) & (x1 < width)) | ((boxes[:, 3] >= y1 - margin) & (y1 < height)))


class TiledDetector:
    """A detector that predicts large images tile by tile (see the module docstring).

    Args:
        detector: a :class:`~dfine.predict.predictor.Predictor`, an :class:`~dfine.runtime.onnx.OnnxDetector`, or
            anything with ``predict(images, threshold)`` and ``class_names``.
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
        if getattr(detector, "predicts_masks", False):
            raise ConfigError("tiled prediction (--tile) merges boxes only, not instance masks: predict a "
                              "segmentation model without --tile")
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
        from dfine.imaging.decode import load_image

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
        boxes, scores, labels, cut = [], [], [], []
        margin = max(2.0, 0.01 * self.tile)  # a predicted edge lands near, not exactly on, the tile's border
        for first in range(0, len(windows), self.batch_size):
            chunk = windows[first:first + self.batch_size]
            found = self.detector.predict([image.crop(w) for w in chunk], threshold)
            for window, det in zip(chunk, found, strict=True):
                x0, y0 = window[:2]
                placed = np.asarray(det["boxes"], dtype=np.float64).reshape(-1, 4) + [x0, y0, x0, y0]
                boxes.append(placed)
                cut.append(cut_by_tile(placed, window, image.width, image.height, margin))
                scores.append(np.asarray(det["scores"], dtype=np.float64).reshape(-1))
                labels.append(np.asarray(det["labels"], dtype=np.int64).reshape(-1))
        merged, kept_scores, kept_labels = merge_overlaps(np.concatenate(boxes), np.concatenate(scores),
                                                          np.concatenate(labels), self.match_threshold,
                                                          np.concatenate(cut))
        return {"boxes": merged, "scores": kept_scores, "labels": kept_labels}
