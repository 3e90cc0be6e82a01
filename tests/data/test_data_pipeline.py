"""Transforms, collate and the DataLoader end to end: boxes follow pixels, the stop epoch, multi-scale, workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datahelpers import box_annotation, write_coco
from PIL import Image

from dfine.data import (
    BatchCollator,
    CocoDetection,
    EpochDataLoader,
    EvalTransforms,
    TrainTransforms,
    build_dataloader,
    multiscale_sizes,
)
from dfine.errors import ConfigError
from dfine.ops import box_cxcywh_to_xyxy

# A white square on black: where the box says the object is, the bright pixels must be.
_BOX_XYWH = [30, 12, 24, 20]


@pytest.fixture()
def white_square(tmp_path):
    array = np.zeros((64, 96, 3), dtype=np.uint8)
    x, y, w, h = _BOX_XYWH
    array[y : y + h, x : x + w] = 255
    Image.fromarray(array).save(tmp_path / "square.png")
    Image.fromarray(np.zeros_like(array)).save(tmp_path / "empty.png")
    images = [
        {"id": 1, "file_name": "square.png", "width": 96, "height": 64},
        {"id": 2, "file_name": "empty.png", "width": 96, "height": 64},
    ]
    return write_coco(tmp_path, images, [box_annotation(1, 1, _BOX_XYWH)], make_images=False)


def _pixel_box(boxes: torch.Tensor, size: int) -> list[int]:
    return (box_cxcywh_to_xyxy(boxes[0]) * size).round().int().tolist()


def test_boxes_follow_the_pixels_through_the_train_pipeline(white_square):
    dataset = CocoDetection(white_square.parent, white_square, TrainTransforms(64, stop_epoch=None))
    torch.manual_seed(0)
    checked = 0
    for _ in range(40):
        image, target = dataset[0]
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        if len(target["boxes"]) == 0:
            continue  # the IoU crop may cut the square's centre away; then the box is rightly dropped
        x1, y1, x2, y2 = _pixel_box(target["boxes"], 64)
        grey = image.mean(0)
        inside = grey[y1 + 1 : y2 - 1, x1 + 1 : x2 - 1]
        outside = grey.clone()
        outside[max(y1 - 1, 0) : y2 + 1, max(x1 - 1, 0) : x2 + 1] = 0  # a pixel of slack for the resize blur
        if inside.numel() == 0:
            continue
        # photometric distortion shifts levels, but the square stays far brighter than anything outside its box
        assert float(inside.min()) > float(outside.max()) + 0.2, (x1, y1, x2, y2)
        checked += 1
    assert checked >= 20


def test_strong_augmentation_stops_at_stop_epoch(white_square):
    train = CocoDetection(white_square.parent, white_square, TrainTransforms(64, stop_epoch=3))
    reference_image, reference = CocoDetection(white_square.parent, white_square, EvalTransforms(64))[0]
    flipped_boxes = reference["boxes"].clone()
    flipped_boxes[:, 0] = 1 - flipped_boxes[:, 0]

    def matches_reference(image, target) -> bool:
        if torch.equal(image, reference_image):
            return torch.allclose(target["boxes"], reference["boxes"])
        return torch.equal(image, reference_image.flip(-1)) and torch.allclose(target["boxes"], flipped_boxes)

    def item_at(dataset, epoch):
        dataset.set_epoch(epoch)
        return dataset[0]

    augmenting = CocoDetection(white_square.parent, white_square, TrainTransforms(64, stop_epoch=20))
    assert not all(matches_reference(*item_at(augmenting, epoch)) for epoch in range(10))  # still augmenting
    outputs = [item_at(train, epoch) for epoch in range(3, 19)]
    assert all(matches_reference(image, target) for image, target in outputs)
    assert all(torch.equal(target["class_labels"], reference["class_labels"]) for _, target in outputs)
    assert len({bool(torch.equal(image, reference_image)) for image, _ in outputs}) == 2  # the flip stays on


def test_image_without_objects_through_pipeline_and_collate(white_square):
    for transforms in (TrainTransforms(64), EvalTransforms(64), None):
        dataset = CocoDetection(white_square.parent, white_square, transforms)
        image, target = dataset[1]
        assert target["boxes"].shape == (0, 4)
        labels_key = "labels" if transforms is None else "class_labels"
        assert target[labels_key].shape == (0,) and target[labels_key].dtype == torch.int64
    dataset = CocoDetection(white_square.parent, white_square, TrainTransforms(64))
    batch = BatchCollator(64, base_size_repeat=2)([dataset[1], dataset[1]])
    assert batch["pixel_values"].shape[:2] == (2, 3)
    assert [t["boxes"].shape for t in batch["labels"]] == [(0, 4), (0, 4)]


def test_multiscale_sizes():
    assert [h for h, _ in multiscale_sizes(640, 2)] == [480, 512, 544, 576, 608, 640, 640, 672, 704, 736, 768, 800]
    for base in (320, 512, (320, 480)):
        sizes = multiscale_sizes(base, 3)
        assert all(h % 32 == 0 and w % 32 == 0 for h, w in sizes)
        assert sizes.count((base, base) if isinstance(base, int) else base) >= 3
    assert sorted({h for h, _ in multiscale_sizes(320, 1)}) == [256, 288, 320, 352, 384, 416]
    with pytest.raises(ConfigError, match="image size must be a positive multiple of 32, got 100"):
        BatchCollator(100, base_size_repeat=1)


def test_collate_multiscale_until_stop_epoch():
    collate = BatchCollator(320, base_size_repeat=1, stop_epoch=2)
    target = {"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]]), "class_labels": torch.tensor([1])}
    allowed = set(multiscale_sizes(320, 1))
    seen = set()
    for image_id in range(60):  # the size is drawn per batch, from its images' ids (and the seed and epoch)
        batch = [(torch.rand(3, 320, 320), {**target, "image_id": image_id})] * 2
        out = collate(batch)
        seen.add(tuple(out["pixel_values"].shape[-2:]))
        assert out["labels"][0]["boxes"] is target["boxes"]  # normalised: untouched by the resize
        assert collate(batch)["pixel_values"].shape == out["pixel_values"].shape  # the same batch, the same size
    assert seen <= allowed and len(seen) >= 3
    batch = [(torch.rand(3, 320, 320), target)] * 2
    collate.set_epoch(2)
    assert all(collate(batch)["pixel_values"].shape == (2, 3, 320, 320) for _ in range(20))
    assert BatchCollator(320)(batch)["pixel_values"].shape == (2, 3, 320, 320)  # None: no multi-scale


@pytest.mark.parametrize("persistent", [True, False])
def test_epoch_reaches_dataloader_workers(white_square, persistent):
    # The square image 8 times; stop epoch 1 for both the strong augmentation and the multi-scale sizes.
    dataset = CocoDetection(white_square.parent, white_square, TrainTransforms(128, stop_epoch=1))
    dataset.index.records = [dataset.index.records[0]] * 8
    reference, _ = CocoDetection(white_square.parent, white_square, EvalTransforms(128))[0]
    loader = build_dataloader(
        dataset,
        2,
        shuffle=True,
        workers=2,
        drop_last=True,
        persistent_workers=persistent,
        collate_fn=BatchCollator(128, base_size_repeat=1, stop_epoch=1),
    )
    loader.set_epoch(0)
    sizes = set()
    for _ in range(3):
        sizes |= {tuple(batch["pixel_values"].shape[-2:]) for batch in loader}
    assert sizes != {(128, 128)}  # multi-scale on in epoch 0
    loader.set_epoch(1)
    for batch in loader:
        assert batch["pixel_values"].shape == (2, 3, 128, 128)
        for image in batch["pixel_values"]:  # augmentation off: the eval image, maybe flipped
            assert torch.equal(image, reference) or torch.equal(image, reference.flip(-1))


def test_dataloader_is_reproducible_with_a_seed(white_square):
    dataset = CocoDetection(white_square.parent, white_square, TrainTransforms(64))

    def first_batch():
        loader = build_dataloader(dataset, 2, shuffle=True, workers=0, seed=3)
        return next(iter(loader))["pixel_values"]

    torch.manual_seed(1)  # the global RNG also drives transforms in the main process
    a = first_batch()
    torch.manual_seed(1)
    assert torch.equal(a, first_batch())


def test_epoch_reaches_spawned_workers(white_square):
    # macOS and Windows start workers with "spawn": the shared epoch must survive pickling into them.
    dataset = CocoDetection(white_square.parent, white_square, TrainTransforms(64, stop_epoch=1))
    dataset.index.records = [dataset.index.records[0]] * 4
    loader = EpochDataLoader(
        dataset,
        batch_size=2,
        num_workers=1,
        persistent_workers=True,
        multiprocessing_context="spawn",
        collate_fn=BatchCollator(64, base_size_repeat=1, stop_epoch=1),
    )
    loader.set_epoch(0)
    assert len(list(loader)) == 2  # starts the persistent worker with epoch 0
    loader.set_epoch(1)
    reference, _ = CocoDetection(white_square.parent, white_square, EvalTransforms(64))[0]
    for batch in loader:
        for image in batch["pixel_values"]:
            assert torch.equal(image, reference) or torch.equal(image, reference.flip(-1))


def test_a_sample_is_augmented_the_same_way_in_any_worker_and_epoch_order(white_square):
    """Augmentation is seeded by (seed, epoch, index): the same item whatever process or order prepares it, so
    persistent workers and resumed runs see exactly what an uninterrupted run sees; other seeds and epochs differ."""
    from dfine.data import BatchCollator, build_dataloader

    def items(seed, workers, epochs):
        dataset = CocoDetection(white_square.parent, white_square, TrainTransforms(64, stop_epoch=50, seed=seed))
        loader = build_dataloader(dataset, 1, shuffle=False, workers=workers, collate_fn=BatchCollator(64),
                                  persistent_workers=workers > 0)
        seen = {}
        for epoch in epochs:
            loader.set_epoch(epoch)
            seen[epoch] = [batch["pixel_values"] for batch in loader]
        return seen

    in_process = items(0, 0, [0, 1, 2])
    workers = items(0, 2, [2, 0, 1])  # other order, worker processes that live across epochs
    for epoch in (0, 1, 2):
        assert all(torch.equal(a, b) for a, b in zip(in_process[epoch], workers[epoch], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(in_process[0], in_process[1], strict=True))
    other_seed = items(1, 0, [0])
    assert not all(torch.equal(a, b) for a, b in zip(in_process[0], other_seed[0], strict=True))
