"""Segmentation models (D-FINE-seg) in deploy form and exported: the deploy form's masks equal the model's, the ONNX
graph's (and OpenVINO IR's) ``masks`` output is checked against PyTorch by the export itself, and the torch-free
runtime turns it into the processor's full-size masks, which ``dfine predict`` draws and writes."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hf_oracle import natural_images
from seghelpers import save_tiny_segmentation_model, tiny_segmentation_model

import dfine
from dfine.cli.main import main

pytest.importorskip("onnxruntime")

SIZE = 160


@pytest.fixture(scope="module")
def seg_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_segmentation_model(tmp_path_factory.mktemp("seg"), image_size=SIZE)


@pytest.fixture(scope="module")
def exported(seg_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The export and what the command printed."""
    path = tmp_path_factory.mktemp("export") / "seg.onnx"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export", "--model", str(seg_dir), "--format", "onnx", "--output", str(path)]) == 0
    return path, printed.getvalue()


@pytest.fixture(scope="module")
def seg_onnx(exported: tuple[Path, str]) -> Path:
    return exported[0]


def test_the_deploy_form_gives_the_models_masks() -> None:
    model = tiny_segmentation_model()
    pixels = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    deployed = model.deploy(SIZE)
    with torch.no_grad():
        expected, got = model(pixels), deployed(pixels)
    assert got.pred_masks.shape == (2, 100, SIZE // 4, SIZE // 4)
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.pred_boxes, expected.pred_boxes, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.pred_masks, expected.pred_masks, atol=1e-4, rtol=0)


def test_the_export_has_a_masks_output_checked_against_pytorch(seg_onnx, exported) -> None:
    import onnx

    graph = onnx.load(str(seg_onnx)).graph
    assert [o.name for o in graph.output] == ["labels", "boxes", "scores", "masks"]
    dims = [d.dim_value for d in graph.output[3].type.tensor_type.shape.dim]
    assert dims == [1, 100, SIZE // 4, SIZE // 4]
    assert "max mask diff" in exported[1]  # the command compared the masks with PyTorch's


def test_the_runtime_masks_are_the_processors(seg_onnx, seg_dir) -> None:
    from dfine.runtime.onnx import OnnxDetector

    detector = OnnxDetector(seg_onnx)
    predictor = dfine.Predictor.from_pretrained(seg_dir, device="cpu")
    assert detector.predicts_masks and predictor.predicts_masks
    # a larger picture (masks enlarged) and one smaller than the masks themselves (shrunk)
    for picture in (natural_images(1, SIZE, seed=3)[0].resize((230, 170)), natural_images(1, SIZE, seed=4)[0]
                    .resize((31, 25))):
        [ours] = detector.predict(picture, threshold=0.0)
        [theirs] = predictor.predict(picture, threshold=0.0)
        assert len(ours["scores"]) == len(theirs["scores"]) > 10
        assert np.array_equal(ours["labels"], theirs["labels"].numpy())
        np.testing.assert_allclose(ours["boxes"], theirs["boxes"].numpy(), atol=0.01 * picture.width)
        expected = theirs["masks"].numpy()
        assert ours["masks"].shape == expected.shape == (len(ours["scores"]), picture.height, picture.width)
        assert expected.any() and (ours["masks"] != expected).mean() < 1e-3  # a pixel that rounds to the other side


def test_predict_with_the_export_draws_and_writes_masks(seg_onnx, seg_dir, tmp_path) -> None:
    picture = natural_images(1, SIZE, seed=3)[0].resize((230, 170))
    picture.save(tmp_path / "p.png")
    runs = {}
    for name, model in (("onnx", seg_onnx), ("torch", seg_dir)):
        out = tmp_path / name
        assert main(["predict", str(tmp_path / "p.png"), "--model", str(model), "--output", str(out),
                     "--threshold", "0.0", "--no-progress"]) == 0
        runs[name] = (json.loads((out / "predictions.json").read_text()), np.asarray(dfine_picture(out / "p.png")))
    (records, drawn), (expected, expected_drawn) = runs["onnx"], runs["torch"]
    assert len(records) == len(expected) > 10 and all("segmentation" in r for r in records)
    same = [a["segmentation"] == b["segmentation"] for a, b in zip(records, expected)]
    assert np.mean(same) > 0.9  # equal masks give equal run-length codes
    assert np.mean(np.abs(drawn.astype(int) - expected_drawn) <= 2) > 0.99


def dfine_picture(path: Path):
    from PIL import Image

    return Image.open(path).convert("RGB")


def test_the_openvino_export_carries_the_masks(seg_dir, tmp_path, capsys) -> None:
    pytest.importorskip("openvino")
    from dfine.runtime.openvino import OpenVinoDetector

    path = tmp_path / "seg.xml"
    assert main(["export", "--model", str(seg_dir), "--format", "openvino", "--precision", "f32", "--output",
                 str(path)]) == 0
    assert "max mask diff" in capsys.readouterr().out  # checked against PyTorch by the command
    detector = OpenVinoDetector(path)
    predictor = dfine.Predictor.from_pretrained(seg_dir, device="cpu")
    assert detector.predicts_masks
    picture = natural_images(1, SIZE, seed=3)[0].resize((230, 170))
    [ours] = detector.predict(picture, threshold=0.0)
    [theirs] = predictor.predict(picture, threshold=0.0)
    assert len(ours["scores"]) == len(theirs["scores"]) > 10
    expected = theirs["masks"].numpy()
    assert ours["masks"].shape == expected.shape and expected.any() and (ours["masks"] != expected).mean() < 1e-3


def test_a_segmentation_model_exports_to_onnx_and_openvino_only(seg_dir, tmp_path, capsys) -> None:
    assert main(["export", "--model", str(seg_dir), "--format", "engine", "--output", str(tmp_path / "m.engine")]) \
        in (2,)
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and ("segmentation model" in error or "tensorrt" in error.lower())
