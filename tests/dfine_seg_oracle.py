"""D-FINE-seg 0.6.2 (PyPI ``dfine-seg``, Apache-2.0) as a test oracle for the segmentation model.

Install it without its dependencies, into the repository's ``.oracles/`` folder (the README's test command does:
``pip install --no-deps --upgrade --target .oracles -r tests/requirements-oracles.txt``). Its full dependency list
brings wandb, hydra, albumentations, OpenCV, pandas, scikit-learn ... that its model files do not need, and its wheel
installs a command named ``dfine`` that would replace ours in a virtual environment's ``bin/``. Its package
``__init__`` imports OpenCV (through its visualiser), so the package is registered here without running it and only
the model modules are imported; they need torch, torchvision and scipy, plus loguru for logging, which is replaced by
the standard ``logging`` when absent.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

ORACLE_VERSION = "0.6.2"
INSTALL_HINT = "pip install --no-deps --upgrade --target .oracles -r tests/requirements-oracles.txt"
ORACLES = Path(__file__).resolve().parents[1] / ".oracles"
if ORACLES.is_dir() and str(ORACLES) not in sys.path:
    sys.path.append(str(ORACLES))  # after the project's own packages: the oracle never shadows them


def _stub_loguru() -> None:
    if "loguru" not in sys.modules and importlib.util.find_spec("loguru") is None:
        stub = types.ModuleType("loguru")
        stub.logger = logging.getLogger("dfine_seg")  # type: ignore[attr-defined]
        sys.modules["loguru"] = stub


def oracle_build_model() -> Any:
    """D-FINE-seg's ``build_model`` (``dfine_seg/model/dfine.py``); skips the test when dfine-seg is not installed."""
    spec = importlib.util.find_spec("dfine_seg")
    if spec is None:
        pytest.skip(f"D-FINE-seg oracle not installed: {INSTALL_HINT}")
    from importlib.metadata import version

    if version("dfine-seg") != ORACLE_VERSION:
        pytest.skip(f"D-FINE-seg {version('dfine-seg')} installed; the oracle is {ORACLE_VERSION}: {INSTALL_HINT}")
    if "dfine_seg" not in sys.modules:
        # the package object without running its __init__ (which imports cv2); submodules import normally
        sys.modules["dfine_seg"] = importlib.util.module_from_spec(spec)
    _stub_loguru()
    return importlib.import_module("dfine_seg.model.dfine").build_model


def oracle_model(size: str, num_classes: int = 80, num_queries: int | None = None) -> torch.nn.Module:
    """D-FINE-seg's instance segmentation model of ``size`` (n/s/m/l/x) with its own random initialisation, in
    eval mode; ``num_queries`` overrides the size's 300."""
    build_model = oracle_build_model()
    configs = importlib.import_module("dfine_seg.model.configs").models
    decoder = configs[size]["DFINETransformer"]
    saved = decoder["num_queries"]
    if num_queries is not None:
        decoder["num_queries"] = num_queries
    try:
        return build_model(size, num_classes, True, "cpu").eval()
    finally:
        decoder["num_queries"] = saved


def oracle_criterion(num_classes: int) -> torch.nn.Module:
    """D-FINE-seg's training criterion with its matcher, as ``build_loss`` makes it for a segmentation model (its
    weights and costs are the same for every size)."""
    oracle_build_model()  # the skip when D-FINE-seg is missing, and the package set up without its __init__
    build_loss = importlib.import_module("dfine_seg.model.dfine").build_loss
    return build_loss("n", num_classes, 0.0, True)
