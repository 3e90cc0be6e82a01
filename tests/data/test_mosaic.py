"""DEIM's Dense O2O data side: mosaics of four samples and batch mixup."""

from __future__ import annotations

import torch
from torchvision import tv_tensors

from dfine.data.mosaic import DenseO2OPolicy, Mosaic, mixup
from dfine.data.seeding import seeded


def _sample(i: int, size: tuple[int, int] = (60, 80)):
    image = torch.full((3, *size), 10 * (i + 1), dtype=torch.uint8)
    boxes = tv_tensors.BoundingBoxes(torch.tensor([[10.0, 10.0, 30.0, 40.0]]), format="XYXY", canvas_size=size)
    return tv_tensors.Image(image), {"boxes": boxes, "labels": torch.tensor([i % 3]), "image_id": i}


def test_a_mosaic_holds_the_boxes_of_four_samples_inside_its_canvas() -> None:
    mosaic = Mosaic(_sample, 10, tile_size=40, degrees=0.0, translate=(0.0, 0.0), scale=(1.0, 1.0))
    with seeded(3):
        image, target = mosaic(*_sample(0))
    height, width = image.shape[-2:]
    assert (height, width) == (80, 2 * 53)  # two 40x53 tiles (shorter side 40) a side
    boxes = target["boxes"].as_subclass(torch.Tensor)
    assert boxes.shape == (4, 4) and len(target["labels"]) == 4
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    assert len({(float(b[0]) // 53, float(b[1]) // 40) for b in boxes}) == 4  # one box in each quadrant
    with seeded(3):
        again, _ = mosaic(*_sample(0))
    assert torch.equal(image, again)  # seeded: the same mosaic


def test_mixup_blends_neighbours_and_keeps_both_images_boxes() -> None:
    pixels = torch.stack([torch.zeros(3, 4, 4), torch.ones(3, 4, 4)])
    labels = [{"class_labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])},
              {"class_labels": torch.tensor([1, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.1, 0.1]] * 2)}]
    mixed, merged = mixup(pixels, labels, 0.5)
    assert torch.allclose(mixed, torch.full_like(mixed, 0.5))
    assert merged[0]["class_labels"].tolist() == [0, 1, 2] and merged[1]["class_labels"].tolist() == [1, 2, 0]
    assert merged[0]["boxes"].shape == (3, 4)


def test_the_policy_is_active_in_its_epochs_only() -> None:
    policy = DenseO2OPolicy(2, 5)
    assert [policy.active(e) for e in range(7)] == [False, False, True, True, True, False, False]
