"""Fixtures for the data tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from dfine.data import make_synthetic_dataset


@pytest.fixture(scope="session")
def synthetic_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same synthetic data written as COCO and as YOLO: (coco data.yaml, yolo data.yaml)."""
    root = tmp_path_factory.mktemp("synthetic")
    kwargs = dict(num_train=12, num_val=4, image_size=(96, 128), seed=7, empty_fraction=0.2, image_format="png")
    return (
        make_synthetic_dataset(root / "coco", format="coco", **kwargs),
        make_synthetic_dataset(root / "yolo", format="yolo", **kwargs),
    )
