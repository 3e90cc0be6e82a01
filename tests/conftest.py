"""Shared pytest set-up: deterministic seeds, and the tests/ folder importable for helper modules."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
