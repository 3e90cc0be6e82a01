"""Fixtures of the prediction command's tests: a small random-weight model stored as a user's model folder, and
pictures to run it on."""

from __future__ import annotations

import pytest
from hf_oracle import natural_images, randomize_weights

import dfine


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model")
    model = dfine.DFineForObjectDetection(dfine.DFineConfig.from_preset("dfine-n-coco"))
    randomize_weights(model, seed=4)
    model.save_pretrained(directory)
    dfine.DFineImageProcessor(size={"height": 320, "width": 320}).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("images")
    for i, image in enumerate(natural_images(3, 200, seed=7)):
        image.save(directory / f"img{i}.jpg")
    return directory
