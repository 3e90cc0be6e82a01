"""Training a data set without a validation split with --val-split: evaluated on held-out training images, the
same ones on resume and in a later dfine val."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from trainhelpers import TINY, tiny_data

import dfine
from dfine.cli.main import main
from dfine.errors import ConfigError


@pytest.fixture
def train_only(tmp_path: Path) -> Path:
    data = tiny_data(tmp_path / "data", num_train=10, num_val=1)
    config = yaml.safe_load(data.read_text())
    config.pop("val")
    data.write_text(yaml.safe_dump(config))
    return data


def test_a_run_evaluates_held_out_images_and_val_finds_them_again(tmp_path: Path, train_only: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    result = dfine.train(train_only, epochs=1, batch_size=4, output=tmp_path / "run", val_split=0.2, **TINY)
    out = capsys.readouterr().out
    assert "2 of the 10 training images are held out for validation" in out
    assert "AP" in result.metrics and (result.output_dir / "val" / "metrics.json").is_file()
    last = torch.load(result.last_checkpoint, weights_only=True)
    assert last["hparams"]["val_split"] == 0.2
    evaluated = json.loads((result.output_dir / "val" / "predictions.json").read_text())
    assert len({r["image_id"] for r in evaluated}) == 2  # only the held-out images were evaluated
    # dfine val --val-split evaluates the same two images: the run's AP
    assert main(["val", "--model", str(result.best_model), "--data", str(train_only), "--val-split", "0.2",
                 "--workers", "0", "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["num_images"] == 2 and scored["AP"] == pytest.approx(result.metrics["AP"], abs=1e-9)
    # a resume keeps the held-out images without being told, and refuses another fraction
    again = dfine.train(train_only, epochs=2, output=tmp_path / "run", resume=True, **TINY)
    assert "2 of the 10 training images are held out" in capsys.readouterr().out and len(again.history) == 2
    with pytest.raises(ConfigError, match="options cannot change when resuming: val_split"):
        dfine.train(train_only, epochs=3, output=tmp_path / "run", resume=True, val_split=0.5, **TINY)


def test_without_val_split_the_warning_says_how_to_get_one(tmp_path: Path, train_only: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="dfine"):
        dfine.train(train_only, epochs=1, batch_size=4, output=tmp_path / "run", **TINY)
    assert "training without evaluation" in caplog.text and "--val-split 0.1" in caplog.text


def test_val_without_a_val_split_points_at_the_option(tmp_path: Path, train_only: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["val", "--model", "dfine-n-coco", "--data", str(train_only), "--workers", "0"]) == 2
    assert "no 'val' split (found: train) (a data set without one: val_split=0.1 / --val-split 0.1" in (
        capsys.readouterr().err)
