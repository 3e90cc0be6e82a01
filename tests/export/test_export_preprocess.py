"""A model's own preprocessing (normalisation, resampling filter) carried into its export."""

from __future__ import annotations

import numpy as np
import pytest

import dfine
from dfine.cli.main import main
from dfine.export.preprocess import check_exportable, input_affine
from dfine.export.verify import Detections, check_images, match_detections
from dfine.runtime.onnx import OnnxDetector

SIZE = 320  # the size the synthetic models are made for (conftest.py)
# mild enough for the synthetic weights to stay well-conditioned (ImageNet statistics saturate their scores)
MEAN, STD = [0.02, 0.04, 0.06], [1.05, 0.95, 1.0]


def test_the_released_preprocessing_adds_nothing() -> None:
    assert input_affine(dfine.DFineImageProcessor()) is None


def test_normalisation_and_rescaling_become_one_affine_map() -> None:
    scale, shift = input_affine(dfine.DFineImageProcessor(do_normalize=True, image_mean=MEAN, image_std=STD))
    np.testing.assert_allclose(scale, [1 / s for s in STD])
    np.testing.assert_allclose(shift, [-m / s for m, s in zip(MEAN, STD)])
    # a model fed 0..255 values (no rescaling) gets images * 255
    assert input_affine(dfine.DFineImageProcessor(do_rescale=False)) == ([255.0] * 3, [0.0] * 3)
    pixels = np.random.default_rng(0).random((3, 4, 4))
    processor = dfine.DFineImageProcessor(do_normalize=True, image_mean=MEAN, image_std=STD, rescale_factor=1.0)
    scale, shift = input_affine(processor)
    expected = (pixels * 255 - np.array(MEAN)[:, None, None]) / np.array(STD)[:, None, None]
    np.testing.assert_allclose(pixels * np.array(scale)[:, None, None] + np.array(shift)[:, None, None], expected)


def test_padding_to_another_size_is_refused() -> None:
    processor = dfine.DFineImageProcessor(do_pad=True, pad_size={"height": 800, "width": 800})
    with pytest.raises(dfine.DFineError, match=r"^m: its processor pads images to 800x800 after resizing, which an "
                                               r"exported graph of 640x640 cannot reproduce"):
        check_exportable(processor, (640, 640), "m")
    check_exportable(dfine.DFineImageProcessor(do_pad=True, pad_size={"height": 640, "width": 640}), (640, 640), "m")


@pytest.fixture(scope="module")
def normalised_model_dir(tmp_path_factory, model_n):
    directory = tmp_path_factory.mktemp("normalised")
    model_n.save_pretrained(directory)
    dfine.DFineImageProcessor(size={"height": SIZE, "width": SIZE}, do_normalize=True, image_mean=MEAN,
                              image_std=STD, resample=3).save_pretrained(directory)
    return directory


def test_an_export_of_a_normalising_model_predicts_as_the_model(normalised_model_dir, tmp_path, capsys) -> None:
    path = tmp_path / "normalised.onnx"
    # the command's own check compares the graph, fed [0, 1] images, with PyTorch fed the processor's output
    assert main(["export", "--model", str(normalised_model_dir), "--output", str(path)]) == 0
    detector = OnnxDetector(path)
    assert detector.resample == "bicubic" and detector.image_size == (SIZE, SIZE)
    pictures = check_images([(500, 375), (375, 500)], seed=8)
    got = [Detections(r["scores"].astype(np.float64), r["labels"], r["boxes"].astype(np.float64))
           for r in detector.predict(pictures, threshold=0.0)]
    predictor = dfine.Predictor.from_pretrained(normalised_model_dir, device="cpu")
    expected = [Detections(r["scores"].double().numpy(), r["labels"].numpy(), r["boxes"].double().numpy())
                for r in predictor.predict(pictures, threshold=0.0)]
    report = match_detections(expected, got, top=100, score_tol=1e-3, box_tol=0.5)
    assert report.checked > 100 and report.fraction == 1.0, report.summary()
    # the same weights fed unnormalised images detect something else: the comparison above can fail
    plain = dfine.Predictor(predictor.model, dfine.DFineImageProcessor(size={"height": SIZE, "width": SIZE}))
    unnormalised = [Detections(r["scores"].double().numpy(), r["labels"].numpy(), r["boxes"].double().numpy())
                    for r in plain.predict(pictures, threshold=0.0)]
    assert all(np.abs(u.scores[:100] - g.scores[:100]).max() > 0.01 for u, g in zip(unnormalised, got))
    capsys.readouterr()
    assert main(["info", str(path)]) == 0
    assert ("images:      RGB stretched to 320x320 (bicubic), values / 255; then inside the graph: the model's "
            "normalisation (mean 0.02,0.04,0.06, std 1.05,0.95,1)") in capsys.readouterr().out


def test_cli_refuses_a_padding_processor_in_one_line(tmp_path, model_n, error_line) -> None:
    model_n.save_pretrained(tmp_path / "m")
    dfine.DFineImageProcessor(size={"height": SIZE, "width": SIZE}, do_pad=True,
                              pad_size={"height": 640, "width": 640}).save_pretrained(tmp_path / "m")
    assert main(["export", "--model", str(tmp_path / "m"), "--output", str(tmp_path / "m.onnx")]) == 2
    assert "its processor pads images to 640x640 after resizing" in error_line()
    assert not (tmp_path / "m.onnx").exists()
