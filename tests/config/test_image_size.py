"""The accepted input sizes: one rule (positive multiples of 32, enough encoder positions) and its messages."""

from __future__ import annotations

import re

import numpy as np
import pytest

from dfine.config import DFineConfig
from dfine.config.image_size import check_image_size, image_size_hw, is_input_size, validate_image_size
from dfine.errors import ConfigError


def test_the_rule() -> None:
    assert is_input_size(640, 320) and is_input_size(32, 32)
    assert not is_input_size(0, 640) and not is_input_size(640, 300) and not is_input_size(-32, 32)


def test_sizes_normalise_to_height_width() -> None:
    assert image_size_hw(640) == (640, 640)
    assert image_size_hw((320, 480)) == (320, 480)
    assert image_size_hw([320, np.int64(480)]) == (320, 480)
    assert validate_image_size(None) is None and validate_image_size(np.int64(320)) == 320


@pytest.mark.parametrize(("size", "message"), [
    (100, "image_size must be a positive multiple of 32, got 100"),
    ("320", "image_size must be a positive multiple of 32, got '320'"),
    (True, "image_size must be a positive multiple of 32, got True"),
    (320.0, "image_size must be a positive multiple of 32, got 320.0"),
    (None, "image_size must be a positive multiple of 32, got None"),
    ((320, 100), "image_size must be positive multiples of 32, got 320x100"),
    ((320, 0), "image_size must be positive multiples of 32, got 320x0"),
    ((320, "480"), "image_size must be a positive multiple of 32, got (320, '480')"),
    ((320, 320, 320), "image_size must be a positive multiple of 32, got (320, 320, 320)"),
])  # fmt: skip
def test_one_line_naming_the_value(size: object, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        image_size_hw(size, "image_size")


def test_square_sizes_refuse_pairs() -> None:
    """``--image-size`` and ``Predictor(image_size=...)`` take one side."""
    with pytest.raises(ConfigError, match=r"^--image-size must be a positive multiple of 32, got \(320, 320\)$"):
        validate_image_size((320, 320), "--image-size")


def test_enough_encoder_positions_for_the_queries() -> None:
    config = DFineConfig.from_preset("dfine-n-coco")  # strides 16 and 32, 300 queries
    check_image_size(config, 256)
    with pytest.raises(ConfigError, match=r"224x224 gives 245 encoder positions.*at least 256x256, or fewer queries"):
        check_image_size(config, 224)
    with pytest.raises(ConfigError, match=r"at least 256x256$"):
        check_image_size(config, 224, training=False)
