"""A small D-FINE-N with random (perturbed) weights, saved as a model folder, for the predictor tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from hf_oracle import randomize_weights

import dfine


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("model")
    model = dfine.DFineForObjectDetection(dfine.DFineConfig.from_preset("dfine-n-coco", num_queries=100))
    randomize_weights(model, seed=4)
    model.save_pretrained(directory)
    return directory
