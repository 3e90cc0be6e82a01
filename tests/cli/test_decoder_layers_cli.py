"""--decoder-layers K on the command line: predict and val run K layers, export records them, and a K the model does
not have is one line."""

from __future__ import annotations

import json

import pytest
import torch

import dfine
from dfine.cli.main import main
from dfine.data import SYNTHETIC_CLASS_NAMES, make_synthetic_dataset

SIZE = 128


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random-weight D-FINE-N (3 decoder layers, 30 queries, 128x128) for the synthetic shapes, and four of them."""
    root = tmp_path_factory.mktemp("depth")
    torch.manual_seed(0)
    config = dfine.DFineConfig.from_preset("dfine-n-coco", num_queries=30,
                                           id2label=dict(enumerate(SYNTHETIC_CLASS_NAMES)))
    dfine.DFineForObjectDetection(config).save_pretrained(root / "model")
    dfine.DFineImageProcessor(size={"height": SIZE, "width": SIZE}).save_pretrained(root / "model")
    data = make_synthetic_dataset(root / "data", num_train=2, num_val=4, image_size=(SIZE, SIZE))
    return root / "model", data.parent


def test_val_and_predict_run_k_layers(tiny, tmp_path, capsys) -> None:
    model, data = tiny
    out = tmp_path / "val1"
    assert main(["val", "--model", str(model), "--data", str(data), "--json", "--device", "cpu", "--workers", "0",
                 "--decoder-layers", "1", "--output", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["num_images"] == 4
    # not the numbers of all three layers (random weights: AP is 0 either way, the scores are what differs)
    dfine.val(model, data, device="cpu", workers=0, output=tmp_path / "all")
    one = json.loads((out / "predictions.json").read_text())
    assert [p["score"] for p in one] != [p["score"] for p in json.loads((tmp_path / "all" / "predictions.json")
                                                                        .read_text())]
    predictor = dfine.Predictor.from_pretrained(model, device="cpu", decoder_layers=2)
    assert predictor.model.model.decoder.eval_idx == 1
    images = data / "images" / "val"
    assert main(["predict", str(images), "--model", str(model), "--decoder-layers", "2",
                 "--output", str(tmp_path / "out"), "--no-save-images", "--no-progress", "--device", "cpu"]) == 0


def test_a_depth_the_model_does_not_have_is_one_line(tiny, tmp_path, capsys) -> None:
    model, data = tiny
    for argv in (["val", "--model", str(model), "--data", str(data), "--workers", "0", "--decoder-layers", "4"],
                 ["export", "--model", str(model), "--decoder-layers", "0", "--output", str(tmp_path / "m.onnx")],
                 ["benchmark", "--model", str(model), "--decoder-layers", "9", "--iters", "1"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "decoder layers must be an integer from 1 to 3" in err, err
