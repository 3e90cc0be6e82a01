"""Fixtures shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainhelpers import TINY, tiny_data

import dfine


@pytest.fixture(scope="session")
def tiny_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 training and 4 validation images, 160x160, 3 classes."""
    return tiny_data(tmp_path_factory.mktemp("tiny_data"))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, tiny_yaml: Path) -> dfine.engine.TrainResult:
    """A finished 2-epoch run (stage 2 from epoch 2, asked for: a run this short from scratch has none by default) on
    the tiny data set."""
    return dfine.train(tiny_yaml, epochs=2, batch_size=4, output=tmp_path_factory.mktemp("run") / "train",
                       stop_epoch=1, **TINY)
