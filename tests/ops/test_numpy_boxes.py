"""NumPy box overlaps: hand-computed values, agreement with the tensor version, and no PyTorch import."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from dfine.ops import box_iou
from dfine.ops.numpy_boxes import box_areas, intersection_areas, iou_matrix


def test_by_hand() -> None:
    a = np.array([[0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 4.0, 6.0]])  # the second box is inverted: area 0
    b = np.array([[1.0, 0.0, 3.0, 2.0]])
    assert box_areas(a).tolist() == [4.0, 0.0]
    assert intersection_areas(a, b).tolist() == [[2.0], [0.0]]
    assert iou_matrix(a, b).tolist() == [[pytest.approx(2 / 6)], [0.0]]
    # crowd: intersection over the first box's own area (a detection inside a crowd region scores 1)
    assert iou_matrix(np.array([[1.0, 0.5, 2.0, 1.5]]), a[:1], crowd=True).tolist() == [[1.0]]


def test_zero_union_is_zero_not_nan() -> None:
    point = np.array([[1.0, 1.0, 1.0, 1.0]])
    assert iou_matrix(point, point).tolist() == [[0.0]]


def test_agrees_with_the_tensor_version() -> None:
    rng = np.random.default_rng(0)
    corners = rng.random((30, 2)) * 50
    a = np.concatenate([corners, corners + rng.random((30, 2)) * 20], axis=1)
    b = a[::-1].copy() + 3.0
    assert np.allclose(iou_matrix(a, b), box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy(), atol=1e-12)


def test_imports_without_torch() -> None:
    script = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None  # any attempt to import torch now fails
        from dfine.ops.numpy_boxes import iou_matrix
        import dfine.engine.analysis, dfine.predict.tiling
    """)
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
