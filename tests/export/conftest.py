"""Fixtures for the deployment tests: well-conditioned random models, a saved model folder and its ONNX export.

Small inputs (320×320) keep the tests fast; nothing here needs exactness at 640. The synthetic weights
(:func:`dfine.export.synthetic.synthetic_detector`) are random but not chaotic, so comparisons between two correct
implementations (deploy vs training form, ONNX Runtime vs PyTorch, bf16 vs fp32) measure the implementations,
not the amplification of rounding errors that a randomly initialised deep network shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import dfine
from dfine.cli.main import main
from dfine.export.synthetic import synthetic_detector

SIZE = 320

_MODELS: dict[str, object] = {}


def synthetic(preset: str):
    """A cached synthetic model (built once per test session; tests must not modify it)."""
    if preset not in _MODELS:
        _MODELS[preset] = synthetic_detector(preset, SIZE, seed=0)
    return _MODELS[preset]


@pytest.fixture(scope="session")
def model_n():
    return synthetic("dfine-n-coco")


@pytest.fixture(scope="session")
def n_model_dir(tmp_path_factory, model_n) -> Path:
    directory = tmp_path_factory.mktemp("model_n")
    model_n.save_pretrained(directory)
    # as if trained by dfine on a COCO file numbering its classes from 1: exports and predictions carry the ids
    config = json.loads((directory / "config.json").read_text())
    config["dataset_category_ids"] = list(range(1, 81))
    (directory / "config.json").write_text(json.dumps(config))
    dfine.DFineImageProcessor(size={"height": SIZE, "width": SIZE}).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def n_onnx(tmp_path_factory, n_model_dir) -> Path:
    """The N model exported through the command line (dynamic batch, checked as part of the command)."""
    path = tmp_path_factory.mktemp("onnx") / "dfine-n.onnx"
    code = main(["export", "--model", str(n_model_dir), "--format", "onnx", "--image-size", str(SIZE),
                 "--dynamic-batch", "--output", str(path)])
    assert code == 0 and path.is_file()
    return path


@pytest.fixture
def synthetic_model():
    """``synthetic_model(preset)``: the cached synthetic model of a preset."""
    return synthetic


@pytest.fixture
def error_line(capsys):
    """``error_line()``: the single line the command wrote to stderr (fails when there are more)."""

    def read() -> str:
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        return err

    return read
