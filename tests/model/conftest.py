"""Shared fixtures of the model tests."""

from __future__ import annotations

import pytest

import dfine


@pytest.fixture(scope="module")
def saved_nano(tmp_path_factory):
    """A randomly initialised D-FINE-N (80 classes) and the folder it was saved to (module-scoped: do not modify)."""
    directory = tmp_path_factory.mktemp("nano")
    model = dfine.DFineForObjectDetection(dfine.DFineConfig.from_preset("dfine-n-coco"))
    model.save_pretrained(directory)
    return directory, model
