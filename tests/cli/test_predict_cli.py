"""`dfine predict` and `dfine info`: outputs on disk, and one-line errors with exit status 2 for bad input."""

from __future__ import annotations

import json

import pytest
import torch
from hf_oracle import natural_images, randomize_weights

import dfine
from dfine.cli.main import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model")
    model = dfine.DFineForObjectDetection(dfine.DFineConfig.from_preset("dfine-n-coco"))
    randomize_weights(model, seed=4)
    model.save_pretrained(directory)
    dfine.DFineImageProcessor(size={"height": 320, "width": 320}).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("images")
    for i, image in enumerate(natural_images(3, 200, seed=7)):
        image.save(directory / f"img{i}.jpg")
    return directory


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_predict_folder_writes_images_and_json(model_dir, image_dir, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["predict", str(image_dir), "--model", str(model_dir), "--output", str(out), "--threshold", "0.0",
                 "--batch-size", "2"])
    assert code == 0
    records = json.loads((out / "predictions.json").read_text())
    assert {r["file_name"].split("/")[-1] for r in records} == {"img0.jpg", "img1.jpg", "img2.jpg"}
    first = records[0]
    assert set(first) == {"image_id", "file_name", "category_id", "category_name", "bbox", "score"}
    assert first["category_name"] == dfine.DFineConfig.from_pretrained(model_dir).id2label[first["category_id"]]
    assert len(first["bbox"]) == 4 and 0 <= first["score"] <= 1
    assert sorted(p.name for p in out.glob("*.jpg")) == ["img0.jpg", "img1.jpg", "img2.jpg"]


def test_predict_matches_the_python_api(model_dir, image_dir, tmp_path) -> None:
    out = tmp_path / "out"
    assert main(["predict", str(image_dir / "img1.jpg"), "--model", str(model_dir), "--output", str(out),
                 "--threshold", "0.2", "--no-save-images"]) == 0
    records = json.loads((out / "predictions.json").read_text())
    model = dfine.DFineForObjectDetection.from_pretrained(model_dir)
    processor = dfine.DFineImageProcessor.from_pretrained(model_dir)
    from PIL import Image

    image = Image.open(image_dir / "img1.jpg")
    with torch.no_grad():
        outputs = model(**processor(image))
    result = processor.post_process_object_detection(outputs, threshold=0.2, target_sizes=[image.size[::-1]])[0]
    assert len(records) == len(result["scores"])
    if records:
        assert records[0]["score"] == pytest.approx(result["scores"][0].item(), abs=1e-5)


@pytest.mark.parametrize("case", ["missing", "empty_folder", "corrupt", "no_match"])
def test_predict_bad_sources(case, model_dir, tmp_path, capsys) -> None:
    if case == "missing":
        source = tmp_path / "nope.jpg"
    elif case == "empty_folder":
        source = tmp_path / "empty"
        source.mkdir()
    elif case == "corrupt":
        source = tmp_path / "broken.jpg"
        source.write_bytes(b"\xff\xd8 definitely not a jpeg")
    else:
        source = tmp_path / "*.png"
    assert main(["predict", str(source), "--model", str(model_dir), "--output", str(tmp_path / "o")]) == 2
    line = _error_line(capsys)
    assert line.startswith("dfine predict: error:")
    assert (source.name if case != "no_match" else "*.png") in line


@pytest.mark.parametrize("case", ["other_model", "other_config", "unknown_preset"])
def test_bad_models(case, image_dir, tmp_path, capsys) -> None:
    if case == "other_model":
        import torchvision

        model = tmp_path / "resnet.pth"
        torch.save(torchvision.models.resnet18().state_dict(), model)
    elif case == "other_config":
        model = tmp_path / "bert"
        model.mkdir()
        (model / "config.json").write_text(json.dumps({"model_type": "bert"}))
        (model / "model.safetensors").write_bytes(b"")
    else:
        model = "dfine-q-coco"
    assert main(["predict", str(image_dir), "--model", str(model), "--output", str(tmp_path / "o")]) == 2
    line = _error_line(capsys)
    assert {"other_model": "not a D-FINE checkpoint", "other_config": "model_type is 'bert', not 'd_fine'",
            "unknown_preset": "dfine-q-coco"}[case] in line


def test_info(model_dir, capsys) -> None:
    assert main(["info", str(model_dir)]) == 0
    out = capsys.readouterr().out
    assert "D-FINE-N" in out and "3,770,421" in out and "320x320" in out and "person" in out
