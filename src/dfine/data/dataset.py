"""The detection data set served to training and evaluation, whatever the file format it came from.

An item is ``(image, target)``:

- ``image``: ``tv_tensors.Image`` (3, H, W) uint8 RGB, EXIF orientation applied;
- ``target["boxes"]``: ``tv_tensors.BoundingBoxes`` (n, 4) float32 absolute ``xyxy`` with ``canvas_size=(H, W)``;
- ``target["labels"]``: (n,) int64 contiguous labels ``0..C-1``;
- ``target["image_id"]``: int; ``target["orig_size"]``: (2,) int64 ``(H, W)`` of the image on disk;
- with ``masks=True`` (instance segmentation), ``target["masks"]``: ``tv_tensors.Mask`` (n, H, W) uint8, one
  rasterised polygon or RLE mask per box (:mod:`dfine.data.polygons`), which the transforms move with the image.

Crowd regions are left out of the targets (they only enter the evaluation ground truth). The transforms of
:mod:`dfine.data.transforms` turn this into the model's target format (normalised ``cxcywh``, ``class_labels``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from dfine.data.images import load_image
from dfine.data.index import DetectionIndex, ImageRecord
from dfine.data.polygons import box_segmentation, rasterize
from dfine.data.seeding import seeded

Transforms = Callable[[tv_tensors.Image, dict[str, Any]], tuple[Any, dict[str, Any]]]


class DetectionDataset(Dataset):
    """Images and repaired annotations of one split (see the module docstring for the item format).

    Args:
        index: the parsed split; it must have no unrepaired problems.
        transforms: called as ``transforms(image, target)``; None returns the raw item.
        masks: serve each object's instance mask too (the split must have one for every object:
            :meth:`DetectionIndex.raise_if_mask_issues`).
    """

    def __init__(self, index: DetectionIndex, transforms: Transforms | None = None, *, masks: bool = False) -> None:
        index.raise_if_problems()
        if masks:
            index.raise_if_mask_issues()
        self.index = index
        self.transforms = transforms
        self.masks = masks
        bind = getattr(transforms, "bind_dataset", None)
        if bind is not None:  # transforms that compose several samples (DEIM's mosaic) draw the others from here
            bind(self)

    @property
    def class_names(self) -> list[str]:
        """Class name of each contiguous label."""
        return list(self.index.categories.names)

    @property
    def category_ids(self) -> list[int]:
        """Original category id of each contiguous label (to map predictions back to the file's ids)."""
        return list(self.index.categories.ids)

    @property
    def num_classes(self) -> int:
        return len(self.index.categories.ids)

    def __len__(self) -> int:
        return len(self.index.records)

    def load_item(self, i: int) -> tuple[tv_tensors.Image, dict[str, Any]]:
        """The untransformed item ``i``."""
        record = self.index.records[i]
        image = load_image(record.path, record.width, record.height)
        keep = ~record.iscrowd
        boxes = tv_tensors.BoundingBoxes(
            torch.from_numpy(record.boxes[keep]).to(torch.float32).reshape(-1, 4),
            format=tv_tensors.BoundingBoxFormat.XYXY,
            canvas_size=(record.height, record.width),
        )
        target = {
            "boxes": boxes,
            "labels": torch.from_numpy(record.labels[keep]).to(torch.int64),
            "image_id": record.image_id,
            "orig_size": torch.tensor([record.height, record.width], dtype=torch.int64),
        }
        if self.masks:
            target["masks"] = self._masks(record, keep)
        return image, target

    @staticmethod
    def _masks(record: ImageRecord, keep: np.ndarray) -> tv_tensors.Mask:
        segmentations = record.segmentations or []
        rows = [rasterize(segmentations[i], record.height, record.width) for i in np.flatnonzero(keep)]
        stacked = np.stack(rows) if rows else np.zeros((0, record.height, record.width), dtype=np.uint8)
        return tv_tensors.Mask(torch.from_numpy(stacked))

    def __getitem__(self, i: int) -> tuple[Any, dict[str, Any]]:
        started = time.perf_counter()
        image, target = self.load_item(i)
        if self.transforms is not None:
            # random transforms draw from a generator seeded by (run seed, epoch, i): the same augmentation in any
            # worker, persistent or not, and after a resume (dfine.data.seeding)
            seed = getattr(self.transforms, "sample_seed", None)
            with seeded(seed(i)) if seed is not None else nullcontext():
                image, target = self.transforms(image, target)
        target["load_seconds"] = time.perf_counter() - started  # the collator moves it out of the target
        return image, target

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to epoch-aware transforms (see :class:`dfine.data.transforms.TrainTransforms`)."""
        set_epoch = getattr(self.transforms, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)

    def coco_ground_truth(self) -> dict[str, Any]:
        """The split as a COCO-format dict for faster-coco-eval / pycocotools.

        Category ids are the contiguous labels, image ids the data set's. Annotation ids are renumbered 1..N:
        COCOeval treats a matched ground-truth id of 0 as "unmatched", and files may repeat ids. Boxes are the
        repaired (clipped) boxes as ``xywh``; ``area`` is the file's when it had one. Crowd regions are included.
        A split with instance masks adds each object's ``segmentation`` (absolute pixels; a crowd region without one
        gets its box), which ``segm`` evaluation reads.
        """
        # Built on each call (cheap) rather than cached: evaluation tools may add keys to the dicts they get.
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for record in self.index.records:
            images.append(
                {"id": record.image_id, "width": record.width, "height": record.height, "file_name": record.file_name}
            )
            xywh = np.concatenate([record.boxes[:, :2], record.boxes[:, 2:] - record.boxes[:, :2]], axis=1)
            segmentations = record.segmentations
            for k, (box, label, crowd, area) in enumerate(zip(
                xywh.tolist(), record.labels.tolist(), record.iscrowd.tolist(), record.areas.tolist(), strict=True
            )):
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": record.image_id,
                        "category_id": label,
                        "bbox": box,
                        "area": area,
                        "iscrowd": int(crowd),
                    }
                )
                if segmentations is not None:
                    given = segmentations[k]
                    annotations[-1]["segmentation"] = given if given is not None else box_segmentation(
                        record.boxes[k].tolist())
        categories = [{"id": label, "name": name} for label, name in enumerate(self.index.categories.names)]
        return {"images": images, "annotations": annotations, "categories": categories}
