"""Detections written as a COCO annotation file, to correct in a labelling tool and train on.

``dfine predict photos/ --model M --save-coco photos.json`` labels a folder with a model: CVAT and Roboflow import
COCO files for correction (Label Studio through its converter, ``label-studio-converter import coco``), and
``dfine train`` reads it with the folder (a data YAML whose ``train``
entry has ``images: photos/`` and ``annotations: photos.json``). Every image is listed, with or without
detections, since an image without objects teaches the model what background looks like.

``file_name`` is relative to the predicted folder (for a glob or single file, to the folder the files share), as
COCO files are relative to their image folder; a downloaded URL keeps its file name, and the URL as ``coco_url``.
Category ids are those of the data set a dfine-trained model came from (``dataset_category_ids``), so a model
trained on a COCO file labels with that file's ids; otherwise 1..C in label order. Each annotation keeps the
detection's ``score``, an extra field that tools ignore and that lets a reviewer sort or filter; so do
``uncertainty`` and ``edge_uncertainty`` (:mod:`dfine.ops.uncertainty`), sorting the boxes whose edges the model is
least sure of first. A segmentation model's instances carry their masks as polygons (the outer contour of each
region of the mask, :func:`dfine.ops.mask_polygons.mask_polygons`) and the mask's pixel count as ``area``."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dfine.errors import InputFileError
from dfine.utils.files import blocking_file

__all__ = ["CocoLabelWriter", "check_label_file", "common_folder"]


def check_label_file(path: str | Path, output_dir: str | Path | None = None) -> Path:
    """``path`` as the annotation file to write: refused in one line when it is a folder, its folder is a file, or
    it is the ``predictions.json`` of ``output_dir`` (written first, then silently replaced), before any prediction
    runs."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise InputFileError(path, "is a folder: give the annotation file to write, e.g. --save-coco labels.json")
    if output_dir is not None and path.resolve() == (Path(output_dir).expanduser() / "predictions.json").resolve():
        raise InputFileError(path, "is the predictions.json this run writes: give the annotation file another name")
    blocker = blocking_file(path)
    if blocker is not None:
        raise InputFileError(blocker, "is a file, so the annotation file cannot be written inside it")
    return path


def common_folder(files: Sequence[Path]) -> Path:
    """The folder the ``files`` share (a single file's own folder)."""
    return Path(os.path.commonpath([str(f.resolve().parent) for f in files]))


class CocoLabelWriter:
    """Collect detections image by image, then :meth:`write` a COCO annotation file.

    Args:
        class_names: the model's class names, by label.
        category_ids: the id of each label in the file (None: 1..C).
        root: the folder ``file_name`` entries are relative to.
    """

    def __init__(self, class_names: Sequence[str], category_ids: Sequence[int] | None, root: Path) -> None:
        ids = list(category_ids) if category_ids is not None and len(category_ids) == len(class_names) \
            else list(range(1, len(class_names) + 1))
        self.category_ids = ids
        self.categories = [{"id": int(i), "name": str(n), "supercategory": ""} for i, n in zip(ids, class_names,
                                                                                              strict=True)]
        self.root = root.resolve()
        self.images: list[dict] = []
        self.annotations: list[dict] = []

    def _file_name(self, path: Path) -> str:
        resolved = path.resolve()
        return resolved.relative_to(self.root).as_posix() if resolved.is_relative_to(self.root) else str(path)

    def add(self, path: Path, width: int, height: int, boxes_xyxy: np.ndarray, labels: np.ndarray,
            scores: np.ndarray, url: str | None = None, uncertainty: np.ndarray | None = None,
            edges: np.ndarray | None = None, masks: np.ndarray | None = None) -> None:
        """One image and its detections (absolute ``xyxy`` boxes, clipped to the image). ``url``: where a
        downloaded image came from, kept as COCO's ``coco_url`` since the download itself is deleted after the run.
        ``uncertainty`` (one per box) and ``edges`` (σ per edge in pixels, :mod:`dfine.ops.uncertainty`), when the
        model gives them, are kept as the extra fields ``uncertainty`` and ``edge_uncertainty``. ``masks`` (K, H,
        W) bool, from a segmentation model, become each annotation's polygons; an instance whose mask is empty is
        left out, as a box clipped to nothing is."""
        from dfine.ops.mask_polygons import mask_polygons

        image_id = len(self.images) + 1
        image = {"id": image_id, "file_name": self._file_name(path), "width": int(width), "height": int(height)}
        self.images.append({**image, "coco_url": url} if url is not None else image)
        label_list = np.asarray(labels).reshape(-1).tolist()
        for i, ((x1, y1, x2, y2), label, score) in enumerate(zip(np.asarray(boxes_xyxy, dtype=np.float64).tolist(),
                                                                 label_list, np.asarray(scores).reshape(-1).tolist(),
                                                                 strict=True)):
            w, h = x2 - x1, y2 - y1
            if w <= 0 or h <= 0 or not 0 <= label < len(self.category_ids):
                continue  # a box clipped to nothing is not an object a tool or a trainer can use
            # an empty segmentation, as box-only COCO files write it: Datumaro (CVAT's COCO import) requires the field
            polygons: list[list[float]] = []
            area = round(w * h, 2)
            if masks is not None:
                polygons = mask_polygons(masks[i])
                if not polygons:
                    continue
                area = int(np.count_nonzero(masks[i]))
            annotation = {
                "id": len(self.annotations) + 1, "image_id": image_id, "category_id": self.category_ids[label],
                "bbox": [round(x1, 2), round(y1, 2), round(w, 2), round(h, 2)], "area": area,
                "segmentation": polygons, "iscrowd": 0, "score": round(float(score), 5)}
            if uncertainty is not None:  # lets a reviewer start with the boxes the model is least sure of
                annotation["uncertainty"] = round(float(uncertainty[i]), 5)
            if edges is not None:
                annotation["edge_uncertainty"] = [round(float(v), 2) for v in edges[i]]
            self.annotations.append(annotation)

    def write(self, path: Path) -> Path:
        """Write the file atomically (an interrupted run leaves none, or the previous one)."""
        from dfine.utils.files import atomic_write_text

        document = {"info": {"description": "detections by dfine predict, to be reviewed"}, "images": self.images,
                    "annotations": self.annotations, "categories": self.categories}
        return atomic_write_text(path, json.dumps(document) + "\n")
