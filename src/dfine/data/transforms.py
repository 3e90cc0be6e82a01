"""The D-FINE augmentation recipe on ``torchvision.transforms.v2`` (the original's
``configs/dfine/include/dataloader.yml``).

Train, in order: RandomPhotometricDistort(p=0.5), RandomZoomOut(fill=0), RandomIoUCrop (applied with p=0.8),
SanitizeBoundingBoxes(min_size=1), RandomHorizontalFlip, Resize to (H, W) (stretch, aspect ratio not kept),
SanitizeBoundingBoxes(min_size=1), float in [0, 1] (no mean/std). The first three are "strong" augmentations and
stop at ``stop_epoch``. Eval: Resize + float.

Every resize of an image (train and eval) is :class:`dfine.processing.processor.DFineImageProcessor`'s: PIL bilinear
on the uint8 image, then /255. Validation scores are therefore those of inference, bit for bit (a tensor resize with
antialiasing differs by up to 1/255 per pixel, enough to move a published checkpoint's AP), and training sees the
same resampling as the original, whose v2 pipeline runs on PIL images.

Both pipelines end with the model's target format (docs/ARCHITECTURE.md): ``boxes`` (n, 4) float32 normalised
``cxcywh`` and ``class_labels`` (n,) int64; ``image_id`` and ``orig_size`` pass through. Instance ``masks``
(``tv_tensors.Mask``, one per box) go through every step with the image (padded, cropped, flipped, resized with
nearest neighbour, dropped with their boxes) and end as a plain (n, H, W) uint8 tensor. Input is the item of
:class:`dfine.data.dataset.DetectionDataset`; the output image is a plain (3, H, W) float32 tensor.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

from dfine.config.image_size import image_size_hw
from dfine.data.epoch import SharedEpoch
from dfine.data.mosaic import DenseO2OPolicy, Mosaic
from dfine.data.seeding import derived_seed
from dfine.ops.boxes import box_xyxy_to_cxcywh


def to_model_target(target: dict[str, Any]) -> dict[str, Any]:
    """Turn ``boxes`` (absolute ``xyxy`` BoundingBoxes) into normalised ``cxcywh`` and ``labels`` into
    ``class_labels``; other keys are kept.

    Returns:
        A new dict: ``boxes`` (n, 4) float32 in [0, 1], ``class_labels`` (n,) int64, and the bookkeeping keys.
    """
    boxes = target["boxes"]
    h, w = boxes.canvas_size
    xyxy = boxes.as_subclass(Tensor).to(torch.float32).reshape(-1, 4)
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    out = {k: v for k, v in target.items() if k not in ("boxes", "labels")}
    out["boxes"] = box_xyxy_to_cxcywh((xyxy / scale).clamp(0.0, 1.0))
    out["class_labels"] = target["labels"].to(torch.int64)
    if "masks" in out:
        out["masks"] = out["masks"].as_subclass(Tensor)
    return out


class TrainTransforms:
    """The training pipeline; strong augmentations switch off from ``stop_epoch`` on.

    The epoch lives in a :class:`SharedEpoch`, so ``set_epoch`` in the main process reaches DataLoader workers.

    Args:
        size: output size, an int (square) or ``(height, width)``; multiples of 32.
        stop_epoch: first epoch without photometric distortion, zoom-out and IoU crop; None keeps them on.
        iou_crop_p: probability of trying an IoU crop (the recipe's 0.8).
        seed: the run's seed; sample ``i`` of epoch ``e`` is augmented with a generator seeded from
            ``(seed, e, i)`` (:mod:`dfine.data.seeding`).
        strong_start: first epoch with strong augmentation (DEIM's plain first epochs; 0 for D-FINE).
        dense_o2o: DEIM's mosaic policy (:mod:`dfine.data.mosaic`): in its epochs, a sample becomes a mosaic of four
            with its probability, and then skips zoom-out and IoU crop, as DEIM's does. The data set provides the
            other three samples (:meth:`bind_dataset`).
    """

    def __init__(self, size: int | tuple[int, int] = 640, stop_epoch: int | None = None, iou_crop_p: float = 0.8,
                 seed: int = 0, strong_start: int = 0, dense_o2o: DenseO2OPolicy | None = None):
        self.size = image_size_hw(size)
        self.stop_epoch = stop_epoch
        self.iou_crop_p = iou_crop_p
        self.seed = seed
        self.strong_start = strong_start
        self.dense_o2o = dense_o2o
        self.mosaic: Mosaic | None = None
        self.epoch = SharedEpoch()
        self.photometric = v2.RandomPhotometricDistort(p=0.5)
        self.zoom_out = v2.RandomZoomOut(fill=0)
        self.iou_crop = v2.RandomIoUCrop()
        self.flip = v2.Compose([v2.SanitizeBoundingBoxes(min_size=1), v2.RandomHorizontalFlip()])
        self.resize = _InferenceResize(self.size)
        self.sanitize = v2.SanitizeBoundingBoxes(min_size=1)

    def set_epoch(self, epoch: int) -> None:
        self.epoch.set(epoch)

    def bind_dataset(self, dataset: Any) -> None:
        """Called by the data set these transforms serve: a mosaic draws its other samples from it."""
        if self.dense_o2o is not None and self.dense_o2o.mosaic_prob > 0:
            self.mosaic = Mosaic(dataset.load_item, len(dataset), tile_size=max(32, max(self.size) // 2))

    def sample_seed(self, index: int) -> int:
        """The seed of sample ``index``'s augmentation in the current epoch."""
        return derived_seed(self.seed, self.epoch.value, index)

    @property
    def strong_augmentation(self) -> bool:
        """Whether the current epoch still uses photometric distortion, zoom-out and IoU crop."""
        epoch = self.epoch.value
        return epoch >= self.strong_start and (self.stop_epoch is None or epoch < self.stop_epoch)

    def __call__(self, image: tv_tensors.Image, target: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        """(3, h, w) uint8 image + raw target -> (3, H, W) float32 image + model target."""
        if self.strong_augmentation:
            mosaic = (self.mosaic is not None and self.dense_o2o is not None and self.dense_o2o.active(self.epoch.value)
                      and float(torch.rand(())) < self.dense_o2o.mosaic_prob)
            if mosaic:
                assert self.mosaic is not None
                image, target = self.mosaic(image, target)
            image, target = self.photometric(image, target)
            if not mosaic:  # DEIM: zoom-out and IoU crop never stack on a mosaic
                image, target = self.zoom_out(image, target)
                # Without boxes, RandomIoUCrop can never satisfy its IoU constraint and spins until it picks "no
                # crop": skipping it gives the same result without the wasted trials.
                if len(target["boxes"]) and float(torch.rand(())) < self.iou_crop_p:
                    image, target = self.iou_crop(image, target)
        image, target = self.flip(image, target)
        image, target = self.resize(image, target)
        image, target = self.sanitize(image, target)
        return image.as_subclass(Tensor), to_model_target(target)


class _InferenceResize:
    """Stretch-resize a uint8 image exactly as :class:`~dfine.processing.processor.DFineImageProcessor` does (PIL
    bilinear, then /255 to float32), and its boxes to match."""

    def __init__(self, size: tuple[int, int]) -> None:
        from dfine.processing.processor import DFineImageProcessor

        self.size = size
        self.processor = DFineImageProcessor(size={"height": size[0], "width": size[1]})

    def __call__(self, image: Tensor, target: dict[str, Any]) -> tuple[tv_tensors.Image, dict[str, Any]]:
        # A uint8 tensor goes through the processor's PIL path, exactly like the PIL image it was decoded from.
        pixels = self.processor(image.as_subclass(Tensor))["pixel_values"][0]
        resized = {"boxes": v2.functional.resize(target["boxes"], list(self.size))}
        if "masks" in target:  # tv_tensors.Mask: nearest neighbour
            resized["masks"] = v2.functional.resize(target["masks"], list(self.size))
        return tv_tensors.Image(pixels), {**target, **resized}


class EvalTransforms:
    """The evaluation pipeline: the inference preprocessing (stretch-resize to ``size``, scale to [0, 1]).

    Pixels are bit-identical to what ``dfine predict`` / the image processor give for the same image.

    Args:
        size: output size, an int (square) or ``(height, width)``; multiples of 32.
    """

    def __init__(self, size: int | tuple[int, int] = 640) -> None:
        self.size = image_size_hw(size)
        self.resize = _InferenceResize(self.size)

    def __call__(self, image: tv_tensors.Image, target: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        """(3, h, w) uint8 image + raw target -> (3, H, W) float32 image + model target."""
        image, target = self.resize(image, target)
        return image.as_subclass(Tensor), to_model_target(target)
