"""dfine.runtime.masks: the NumPy bilinear resize, NMS and box crop equal PyTorch's (the processor's) to rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import nms as torch_nms

from dfine.processing.segmentation import crop_to_boxes
from dfine.runtime.masks import instance_masks, nms, resize_bilinear


@pytest.mark.parametrize("size", [(170, 230), (40, 40), (25, 31), (7, 90)])
def test_resize_is_pytorchs_bilinear_without_align_corners(size) -> None:
    planes = np.random.default_rng(0).random((3, 40, 40), dtype=np.float32)
    expected = F.interpolate(torch.from_numpy(planes)[None], size=size, mode="bilinear", align_corners=False)[0]
    # float32 rounding of the weights
    np.testing.assert_allclose(resize_bilinear(planes, size), expected.numpy(), atol=1e-5)


def test_nms_keeps_what_torchvision_keeps() -> None:
    rng = np.random.default_rng(1)
    corners = rng.random((60, 2)) * 80
    boxes = np.concatenate([corners, corners + 10 + rng.random((60, 2)) * 40], axis=1).astype(np.float32)
    scores = rng.random(60).astype(np.float32)
    expected = torch_nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5).numpy()
    assert np.array_equal(nms(boxes, scores, 0.5), expected)
    assert len(expected) < 60  # something was suppressed


def test_masks_are_thresholded_and_cut_to_their_boxes_as_the_processor_does() -> None:
    probabilities = np.random.default_rng(2).random((5, 20, 20), dtype=np.float32)
    boxes = np.array([[0, 0, 80, 80], [10.5, 3.2, 50.7, 60.1], [0, 0, 0, 0], [70, 70, 80, 80], [5, 5, 6, 6]],
                     dtype=np.float32)
    masks = instance_masks(probabilities, boxes, (80, 80))
    resized = F.interpolate(torch.from_numpy(probabilities)[None], size=(80, 80), mode="bilinear",
                            align_corners=False)[0] >= 0.5
    expected = crop_to_boxes(resized, torch.from_numpy(boxes)).numpy()
    assert masks.dtype == bool and masks.shape == (5, 80, 80)
    assert (masks != expected).mean() < 1e-3 and masks[0].any() and not masks[2].any()
    assert not masks[1][:, :10].any() and not masks[1][61:].any()
