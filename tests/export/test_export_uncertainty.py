"""Box uncertainty in exported graphs (``dfine export --uncertainty``): the outputs equal PyTorch's post-processed
uncertainty, the runtimes return them per detection, ``dfine predict`` writes them, an export without the option keeps
its three outputs, and the OpenVINO IR carries them."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from seghelpers import tiny_segmentation_model

import dfine
from dfine.cli.main import main
from dfine.data import make_synthetic_dataset
from dfine.errors import DFineError
from dfine.export.onnx import export_onnx
from dfine.export.uncertainty import check_uncertainty
from dfine.export.verify import check_images

pytest.importorskip("onnxruntime")

from dfine.runtime.detector import preprocess  # noqa: E402
from dfine.runtime.onnx import OnnxDetector  # noqa: E402

SIZE = 320
OUTPUTS = ["labels", "boxes", "scores", "edge_uncertainty", "uncertainty"]


@pytest.fixture(scope="module")  # one export, checked against PyTorch by the command itself (~30 s)
def unc_onnx(tmp_path_factory, n_model_dir):
    path = tmp_path_factory.mktemp("unc") / "dfine-n-u.onnx"
    code = main(["export", "--model", str(n_model_dir), "--format", "onnx", "--image-size", str(SIZE),
                 "--dynamic-batch", "--uncertainty", "--output", str(path)])
    assert code == 0 and path.is_file()
    return path


def test_graph_outputs_and_metadata(unc_onnx, capsys) -> None:
    proto = onnx.load(str(unc_onnx))
    outputs = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in proto.graph.output}
    assert list(outputs) == OUTPUTS
    assert outputs["edge_uncertainty"] == ["batch", 300, 4] and outputs["uncertainty"] == ["batch", 300]
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in proto.graph.output[1:])
    assert {p.key: p.value for p in proto.metadata_props}["uncertainty"] == "true"
    assert main(["info", str(unc_onnx)]) == 0
    printed = capsys.readouterr().out
    assert "output:      edge_uncertainty: float32 [batch, 300, 4]" in printed
    assert "output:      uncertainty: float32 [batch, 300]" in printed and "uncertainty: outputs" in printed


def test_graph_uncertainty_equals_the_pytorch_post_processing(unc_onnx, model_n) -> None:
    """Original sizes (width, height) differ per image and are not square, so a swapped axis would show."""
    originals = [(800, 600), (400, 700)]
    pictures = check_images(originals, seed=5)
    processor = dfine.DFineImageProcessor(size=SIZE)
    pixels = processor(pictures)["pixel_values"]
    labels, boxes, scores, edges, uncertainty = OnnxDetector(unc_onnx).run(pixels.numpy(), np.array(originals))
    with torch.inference_mode():
        outputs = model_n(pixels, output_uncertainty=True)
    reference = processor.post_process_object_detection(outputs, threshold=-1.0, return_uncertainty=True,
                                                        target_sizes=[(h, w) for w, h in originals])
    top = 20
    for i, (width, height) in enumerate(originals):
        ref = {k: v.numpy() for k, v in reference[i].items()}
        assert np.array_equal(labels[i, :top], ref["labels"][:top])
        tolerance = 1e-3 * max(width, height)  # the boxes' tolerance, in pixels
        np.testing.assert_allclose(boxes[i, :top], ref["boxes"][:top], atol=tolerance)
        np.testing.assert_allclose(edges[i, :top], ref["edge_uncertainty"][:top], atol=tolerance)
        np.testing.assert_allclose(uncertainty[i, :top], ref["uncertainty"][:top], rtol=1e-3, atol=1e-6)
        assert (edges[i] >= 0).all() and (uncertainty[i] >= 0).all() and edges[i, :top].max() > 0
        # σ of the left/right edges scale with the width, top/bottom with the height: image 1 is portrait
    assert not np.allclose(edges[0, :top] / [800, 600, 800, 600], edges[1, :top] / [400, 700, 400, 700])
    # the export's own check passes these outputs, and fails a scaled per-box number or swapped axes
    sizes = np.array(originals)
    assert check_uncertainty(reference, sizes, labels, boxes, scores, edges, uncertainty, "graph", 1e-3, 1e-3) < 1e-5
    for wrong_edges, wrong_uncertainty in ((edges, uncertainty * 1.05), (edges[..., [1, 0, 3, 2]], uncertainty)):
        with pytest.raises(DFineError, match="box uncertainties differ"):
            check_uncertainty(reference, sizes, labels, boxes, scores, wrong_edges, wrong_uncertainty, "graph", 1e-3,
                              1e-3)


def test_runtime_predict_returns_uncertainty_per_detection(unc_onnx) -> None:
    detector = OnnxDetector(unc_onnx)
    assert detector.predicts_uncertainty and detector.graph_outputs == OUTPUTS
    picture = check_images([(640, 480)], seed=3)[0]
    result = detector.predict(picture, threshold=0.05)[0]
    count = len(result["scores"])
    assert count > 0 and result["edge_uncertainty"].shape == (count, 4) and result["uncertainty"].shape == (count,)
    _, _, scores, edges, uncertainty = detector.run(preprocess([picture], detector.image_size), np.array([[640, 480]]))
    keep = scores[0] > 0.05
    np.testing.assert_array_equal(result["edge_uncertainty"], edges[0][keep])
    np.testing.assert_array_equal(result["uncertainty"], uncertainty[0][keep])


def test_export_without_the_option_keeps_three_outputs(n_onnx) -> None:
    proto = onnx.load(str(n_onnx))
    assert [o.name for o in proto.graph.output] == ["labels", "boxes", "scores"]
    assert "uncertainty" not in {p.key for p in proto.metadata_props}
    detector = OnnxDetector(n_onnx)
    assert not detector.predicts_uncertainty
    result = detector.predict(check_images([(320, 240)])[0], threshold=0.05)[0]
    assert "uncertainty" not in result and "edge_uncertainty" not in result


def test_predict_cli_writes_uncertainty_from_an_onnx_file(unc_onnx, n_onnx, tmp_path, error_line) -> None:
    image = tmp_path / "street.png"
    check_images([(400, 300)], seed=2)[0].save(image)
    out = tmp_path / "out"
    assert main(["predict", str(image), "--model", str(unc_onnx), "--output", str(out), "--threshold", "0.05",
                 "--show-uncertainty", "--no-progress"]) == 0
    records = json.loads((out / "predictions.json").read_text())
    assert records and all(r["uncertainty"] >= 0 and len(r["edge_uncertainty"]) == 4 for r in records)
    assert (out / "street.png").is_file()
    # an export without the outputs cannot draw them: one line saying how to get them
    assert main(["predict", str(image), "--model", str(n_onnx), "--output", str(tmp_path / "o2"),
                 "--show-uncertainty", "--no-progress"]) == 2
    line = error_line()
    assert str(n_onnx) in line and "--uncertainty" in line


def test_val_of_an_export_with_uncertainty_writes_the_uncertainty_report(unc_onnx, tmp_path, capsys) -> None:
    data = make_synthetic_dataset(tmp_path / "data", num_train=1, num_val=2, image_size=(320, 320), format="yolo")
    data.write_text(data.read_text().split("names:")[0] + "names: [" + ", ".join(f"c{i}" for i in range(80)) + "]\n")
    report = tmp_path / "report"
    assert main(["val", "--model", str(unc_onnx), "--data", str(data), "--output", str(report), "--threshold", "0.0",
                 "--threads", "1"]) == 0
    assert "uncertainty.json and uncertainty.png" in capsys.readouterr().out
    assert json.loads((report / "uncertainty.json").read_text())["detections"] > 0


def test_segmentation_and_other_formats_are_refused_in_one_line(tmp_path, error_line) -> None:
    with pytest.raises(DFineError, match="segmentation model") as caught:
        export_onnx(tiny_segmentation_model(), tmp_path / "seg.onnx", 160, uncertainty=True)
    assert "\n" not in str(caught.value) and not (tmp_path / "seg.onnx").exists()
    for extra in (["--format", "engine"], ["--int8", "--data", str(tmp_path)]):
        assert main(["export", "--model", "dfine-n-coco", "--uncertainty", "--output", str(tmp_path / "x"),
                     *extra]) == 2
        assert "--uncertainty" in error_line()


@pytest.mark.slow  # an OpenVINO export checked against PyTorch (~25 s)
def test_openvino_ir_carries_the_uncertainty_outputs(unc_onnx, model_n, tmp_path) -> None:
    pytest.importorskip("openvino")
    from dfine.export.openvino import export_openvino
    from dfine.runtime.openvino import OpenVinoDetector

    path = export_openvino(model_n, tmp_path / "n-u.xml", SIZE, precision="f32", uncertainty=True).path
    detector = OpenVinoDetector(path)
    assert detector.predicts_uncertainty and detector.graph_outputs == OUTPUTS
    picture = check_images([(640, 480)], seed=3)[0]
    got, expected = detector.predict(picture, threshold=0.05)[0], OnnxDetector(unc_onnx).predict(picture, 0.05)[0]
    top = min(10, len(expected["scores"]))
    assert top > 0 and np.array_equal(got["labels"][:top], expected["labels"][:top])
    np.testing.assert_allclose(got["edge_uncertainty"][:top], expected["edge_uncertainty"][:top], atol=0.64)
    np.testing.assert_allclose(got["uncertainty"][:top], expected["uncertainty"][:top], rtol=1e-3, atol=1e-6)
