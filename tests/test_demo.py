"""``dfine demo``: the end-to-end smoke run and its parts (output folder checks, evaluation and drawing)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from PIL import Image

from dfine.demo import run_demo
from dfine.demo.common import prepare_output
from dfine.demo.detection import _evaluate_and_draw, estimate_epochs
from dfine.errors import DFineError


def test_demo_smoke_run(tmp_path, capsys):
    from dfine.model import DFineForObjectDetection

    result = run_demo(output=tmp_path / "demo", epochs=1, device="cpu", seed=0, progress=False, num_train=8,
                      num_val=4, batch_size=4)
    model = DFineForObjectDetection.from_pretrained(result.model_dir)
    assert model.config.class_names == ["circle", "square", "triangle"]
    assert result.epochs == 1
    assert Image.open(result.predictions_grid).size[0] > 0
    assert result.results_plot is not None and result.results_plot.suffix == ".png"
    Image.open(result.results_plot).verify()
    assert (result.predictions_dir / "predictions.json").exists()
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    assert 0 <= (metrics["AP"] or 0) <= 1 and result.metrics["AP50"] == metrics["AP50"]
    out = capsys.readouterr().out
    assert "AP50" in out and "dfine predict" in out and "dfine train --data" in out and "dfine check --data" in out
    preview = result.model_dir.parent / "train_batch0.jpg"
    assert f"{preview}   a training batch after augmentation" in out
    Image.open(preview).verify()
    report = result.model_dir.parent / "val"
    assert f"{report}/   confusion matrix, precision-recall curves" in out
    Image.open(report / "confusion_matrix.png").verify()
    # deterministic for a seed: a second run trains to the same weights
    from safetensors.torch import load_file

    again = run_demo(output=tmp_path / "again", epochs=1, device="cpu", seed=0, progress=False, num_train=8,
                     num_val=4, batch_size=4)
    first, second = (load_file(str(r.model_dir / "model.safetensors")) for r in (result, again))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_evaluate_and_draw_with_a_saved_model(tmp_path):
    from dfine.config.presets import preset_config
    from dfine.data import make_synthetic_dataset
    from dfine.model import DFineForObjectDetection

    make_synthetic_dataset(tmp_path / "data", num_train=1, num_val=3, image_size=(256, 256), seed=0)
    config = preset_config("dfine-n-coco", id2label={0: "circle", 1: "square", 2: "triangle"})
    DFineForObjectDetection(config).save_pretrained(tmp_path / "model")
    metrics, grid, predictions = _evaluate_and_draw(tmp_path / "model", tmp_path / "data", tmp_path, 256, "cpu",
                                                    progress=False)
    assert set(metrics) >= {"AP", "AP50", "per_class_AP"}
    assert set(metrics["per_class_AP"]) == {"circle", "square", "triangle"}
    assert json.loads((tmp_path / "metrics.json").read_text())["AP"] == metrics["AP"]
    picture = Image.open(grid)
    assert picture.width > 4 * 256  # four enlarged cells per row: two "ground truth | prediction" pairs
    assert len(json.loads((predictions / "predictions.json").read_text())) >= 0
    assert len(list(predictions.glob("*.jpg"))) == 3


def test_output_folder_guard(tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(DFineError, match="not written by dfine demo"):
        prepare_output(other)
    demo = tmp_path / "demo"
    prepare_output(demo)
    (demo / "train").mkdir()
    (demo / "train" / "old.txt").write_text("old")
    prepare_output(demo)  # an earlier demo folder is reused, its run folders cleared
    assert not (demo / "train").exists()


def test_invalid_arguments(tmp_path):
    with pytest.raises(DFineError, match="multiple of 32"):
        run_demo(output=tmp_path, image_size=250)
    with pytest.raises(DFineError, match="epochs"):
        run_demo(output=tmp_path, epochs=0)


def test_minutes_budget_gives_whole_epochs():
    torch.set_num_threads(2)
    epochs = estimate_epochs(0.5, num_train=16, num_val=4, image_size=256, batch_size=4, device="cpu", seed=0)
    assert isinstance(epochs, int) and epochs >= 1


def test_cli_registers_demo():
    from dfine.cli.main import build_parser

    args = build_parser().parse_args(["demo", "--epochs", "2", "--output", "x", "--quiet"])
    assert (args.epochs, args.output, args.quiet, args.minutes) == (2, "x", True, None)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--epochs", "2", "--minutes", "3"])


@pytest.mark.parametrize("options, message", [
    ({"minutes": float("nan")}, "minutes must be a positive number, got nan"),
    ({"minutes": float("inf")}, "minutes must be a positive number, got inf"),
    ({"seed": -1}, "the seed must be an integer from 0 to 2**63 - 1, got -1"),
])
def test_invalid_minutes_and_seed_are_one_line(tmp_path, options, message):
    # NaN minutes reached math.floor (ValueError), a negative seed NumPy's generator, both as tracebacks
    with pytest.raises(DFineError, match=re.escape(message)):
        run_demo(output=tmp_path / "demo", **options)


def test_output_that_is_a_file_or_below_one_is_one_line(tmp_path):
    # both were a NotADirectoryError traceback
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(DFineError, match="exists and is not a folder"):
        prepare_output(tmp_path / "notes.txt")
    with pytest.raises(DFineError, match="part of the path is a file, not a folder"):
        prepare_output(tmp_path / "notes.txt" / "demo")
