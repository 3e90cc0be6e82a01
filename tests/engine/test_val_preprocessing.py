"""Validation preprocessing is the inference preprocessing, bit for bit (so published checkpoints score as
published)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dfine.data import BatchCollator, EvalTransforms, build_dataloader, make_synthetic_dataset, resolve_dataset
from dfine.processing.processor import DFineImageProcessor


@pytest.mark.parametrize("image_format", ["jpg", "png"])
def test_val_pixels_equal_the_processor(tmp_path: Path, image_format: str) -> None:
    data = make_synthetic_dataset(tmp_path, num_train=1, num_val=3, image_size=(123, 201), seed=5,
                                  image_format=image_format)
    dataset = resolve_dataset(data).build("val", EvalTransforms((96, 160)))
    processor = DFineImageProcessor(size={"height": 96, "width": 160})
    loader = build_dataloader(dataset, 3, shuffle=False, workers=0, collate_fn=BatchCollator((96, 160)))
    batch = next(iter(loader))
    for i, record in enumerate(dataset.index.records):
        expected = processor(str(record.path))["pixel_values"][0]
        assert torch.equal(dataset[i][0], expected)
        assert torch.equal(batch["pixel_values"][i], expected)
    # boxes stay normalised to the original image
    target = dataset[0][1]
    assert target["boxes"].dtype == torch.float32 and (target["boxes"] <= 1).all()
    assert target["orig_size"].tolist() == [123, 201]
