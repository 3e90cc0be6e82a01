"""Dense one-to-one matching's data side (DEIM, Huang et al. CVPR 2025, "Dense O2O"): more objects per training image.

A DETR matches each ground-truth box to one query, so an image with few objects gives few positive queries per
step. DEIM raises the count without changing the matching by putting more objects into each image:

* :class:`Mosaic` tiles the sample with three others drawn from the data set in a 2x2 grid (each resized so its
  shorter side is ``tile_size``), then applies one random affine transform (rotation, translation, scale) to the
  whole mosaic and its boxes (with instance masks, each box becomes its transformed mask's extent); the rest of the
  pipeline (photometric distortion, flip, resize) follows as usual.
  In the original (``engine/data/transforms/mosaic.py: Mosaic``) a mosaic sample skips zoom-out and IoU crop.
* :func:`mixup` blends each image of a batch with its neighbour (ratio drawn from [0.45, 0.55]) and gives it
  both images' boxes (``engine/data/dataloader.py: BatchImageCollateFunction.apply_mixup``).

Both only run in DEIM's middle epochs (:class:`DenseO2OPolicy`). Randomness comes from torch's generator, which
the data set seeds per sample and the collator per batch (:mod:`dfine.data.seeding`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

LoadItem = Callable[[int], tuple[tv_tensors.Image, dict[str, Any]]]


@dataclass(frozen=True)
class DenseO2OPolicy:
    """When DEIM's composition runs: ``start <= epoch < end`` (its ``policy.epoch[0]`` and ``[1]``), with these
    probabilities per sample (mosaic) and per batch (mixup)."""

    start: int
    end: int
    mosaic_prob: float = 0.5
    mixup_prob: float = 0.5

    def active(self, epoch: int) -> bool:
        return self.start <= epoch < self.end


class Mosaic:
    """Four samples in a 2x2 grid, then a random affine transform of the whole (see the module docstring).

    Args:
        load_item: returns the untransformed sample ``i`` of the data set (uint8 image, absolute xyxy boxes).
        length: the number of samples to draw the three others from.
        tile_size: the shorter side of each tile (DEIM: 320).
        degrees, translate, scale: the affine transform's ranges (DEIM: 10, (0.1, 0.1), (0.5, 1.5)).
    """

    def __init__(self, load_item: LoadItem, length: int, tile_size: int = 320, degrees: float = 10.0,
                 translate: tuple[float, float] = (0.1, 0.1), scale: tuple[float, float] = (0.5, 1.5)) -> None:
        self.load_item = load_item
        self.length = length
        self.resize = v2.Resize(tile_size)
        self.affine = v2.RandomAffine(degrees=degrees, translate=translate, scale=scale, fill=0)

    def __call__(self, image: tv_tensors.Image, target: dict[str, Any]) -> tuple[tv_tensors.Image, dict[str, Any]]:
        others = torch.randint(self.length, (3,)).tolist()
        tiles = [self.resize(image, target)] + [self.resize(*self.load_item(i)) for i in others]
        cell_h = max(int(tile.shape[-2]) for tile, _ in tiles)
        cell_w = max(int(tile.shape[-1]) for tile, _ in tiles)
        canvas = torch.zeros((image.shape[0], 2 * cell_h, 2 * cell_w), dtype=image.dtype)
        boxes, labels = [], []
        for k, (tile, tile_target) in enumerate(tiles):
            top, left = (k // 2) * cell_h, (k % 2) * cell_w
            canvas[:, top:top + tile.shape[-2], left:left + tile.shape[-1]] = tile
            boxes.append(tile_target["boxes"].as_subclass(Tensor) + torch.tensor([left, top, left, top]))
            labels.append(tile_target["labels"])
        merged = {**target, "labels": torch.cat(labels),
                  "boxes": tv_tensors.BoundingBoxes(torch.cat(boxes).reshape(-1, 4), format="XYXY",
                                                    canvas_size=(2 * cell_h, 2 * cell_w))}
        if "masks" not in target:
            return self.affine(tv_tensors.Image(canvas), merged)
        # instance masks: each tile's pasted where its image went, in the same object order
        merged["masks"] = _mosaic_masks([tile_target["masks"] for _, tile_target in tiles], cell_h, cell_w)
        image, merged = self.affine(tv_tensors.Image(canvas), merged)
        merged["boxes"] = _mask_boxes(merged["masks"], merged["boxes"])
        return image, merged


def _mosaic_masks(masks: list[Tensor], cell_h: int, cell_w: int) -> tv_tensors.Mask:
    """The (n, 2·cell_h, 2·cell_w) masks of a mosaic: tile k's (n_k, h, w) masks at its grid cell, zero elsewhere."""
    canvas = torch.zeros((sum(len(m) for m in masks), 2 * cell_h, 2 * cell_w), dtype=masks[0].dtype)
    first = 0
    for k, tile_masks in enumerate(masks):
        top, left = (k // 2) * cell_h, (k % 2) * cell_w
        canvas[first:first + len(tile_masks), top:top + tile_masks.shape[-2], left:left + tile_masks.shape[-1]] = \
            tile_masks
        first += len(tile_masks)
    return tv_tensors.Mask(canvas)


def _mask_boxes(masks: Tensor, boxes: tv_tensors.BoundingBoxes) -> tv_tensors.BoundingBoxes:
    """Each object's box as its mask's extent (pixel edges), as D-FINE-seg recomputes a box from its transformed
    polygon: the affine's box of a rotated box is wider than the object; an object whose mask left the canvas gets an
    empty box, which the pipeline's ``SanitizeBoundingBoxes`` drops with its mask."""
    from torchvision.ops import masks_to_boxes

    binary = masks.as_subclass(Tensor).bool()
    tight = torch.zeros((len(binary), 4), dtype=boxes.dtype)
    present = binary.flatten(1).any(dim=1)
    if present.any():
        tight[present] = masks_to_boxes(binary[present]).to(boxes.dtype) + torch.tensor([0, 0, 1, 1], dtype=boxes.dtype)
    return tv_tensors.wrap(tight, like=boxes)


def mixup(pixel_values: Tensor, labels: list[dict[str, Any]], ratio: float) -> tuple[Tensor, list[dict[str, Any]]]:
    """Blend image ``i`` with image ``i - 1`` (``ratio`` of the own image) and give it both images' boxes (and
    instance masks, when the targets have them)."""
    mixed = pixel_values * ratio + pixel_values.roll(shifts=1, dims=0) * (1.0 - ratio)
    previous = labels[-1:] + labels[:-1]
    merged = [{**own, "class_labels": torch.cat([own["class_labels"], other["class_labels"]]),
               "boxes": torch.cat([own["boxes"], other["boxes"]])} for own, other in zip(labels, previous, strict=True)]
    for target, own, other in zip(merged, labels, previous, strict=True):
        if "masks" in own and "masks" in other:
            target["masks"] = torch.cat([own["masks"], other["masks"]])
    return mixed, merged

