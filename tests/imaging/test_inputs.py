"""dfine.imaging.inputs: the input rules the processor, the Predictor and the torch-free runtime share."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dfine.errors import DFineError
from dfine.imaging.inputs import image_list, standardize_image


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_float_pictures_with_nan_or_infinity_are_refused(bad):
    array = np.full((4, 5, 3), 0.5, np.float32)
    array[1, 2, 0] = bad  # one bad value among good ones: min/max ignoring it would let it through
    with pytest.raises(DFineError, match="NaN or infinite"):
        standardize_image(array)


def test_image_list_reads_generators_but_not_dicts_or_bytes():
    pictures = [Image.new("RGB", (3, 2)), np.zeros((2, 3, 3), np.uint8)]
    assert image_list(picture for picture in pictures) == pictures
    assert len(image_list(np.zeros((4, 2, 3, 3), np.uint8))) == 4  # a 4-D array is a batch
    assert len(image_list(np.zeros((2, 3, 3), np.uint8))) == 1
    assert image_list({"a": 1}) == [{"a": 1}] and image_list(b"xy") == [b"xy"]
    with pytest.raises(DFineError, match="no images given"):
        image_list(iter([]))
    with pytest.raises(DFineError, match="cannot read an image of type dict"):
        standardize_image({"a": 1})
