"""The onnxruntime-only runtime: works where PyTorch cannot be imported, and matches the torch backend."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

import dfine
from dfine.cli.main import main
from dfine.export.verify import Detections, check_images, match_detections
from dfine.runtime import OnnxDetector, preprocess


def test_preprocessing_is_the_processors(tmp_path) -> None:
    pictures = check_images([(333, 211), (640, 640), (97, 500)], seed=3)
    pictures.append(pictures[0].convert("L"))
    pictures.append(pictures[1].convert("RGBA"))
    expected = dfine.DFineImageProcessor(size={"height": 320, "width": 256})(pictures)["pixel_values"].numpy()
    assert np.array_equal(preprocess(pictures, (320, 256)), expected)


def test_runtime_without_torch_matches_torch(n_onnx, n_model_dir, tmp_path) -> None:
    paths = []
    for i, picture in enumerate(check_images([(500, 375), (375, 500)], seed=21)):
        paths.append(tmp_path / f"img{i}.png")
        picture.save(paths[-1])
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["torch"] = None  # any attempt to import torch now fails
        from dfine.runtime import OnnxDetector
        detector = OnnxDetector({str(n_onnx)!r})
        results = detector.predict({[str(p) for p in paths]!r}, threshold=0.0)
        assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
        print(json.dumps([{{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in r.items()}}
                          for r in results]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert len(results) == 2 and len(results[0]["scores"]) == 300
    assert results[0]["names"][0] == dfine.DFineConfig.from_pretrained(n_model_dir).id2label[results[0]["labels"][0]]

    predictor = dfine.Predictor.from_pretrained(n_model_dir, device="cpu")
    reference = predictor.predict(paths, threshold=0.0)
    ref = [Detections(r["scores"].double().numpy(), r["labels"].numpy(), r["boxes"].double().numpy())
           for r in reference]
    got = [Detections(np.array(r["scores"]), np.array(r["labels"]), np.array(r["boxes"])) for r in results]
    report = match_detections(ref, got, top=100, score_tol=1e-3, box_tol=0.5)  # half a pixel
    assert report.fraction == 1.0, report.summary()


def test_predict_cli_onnxruntime_backend_matches_torch(n_onnx, n_model_dir, tmp_path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for i, picture in enumerate(check_images([(320, 240), (240, 320)], seed=5)):
        picture.save(images / f"p{i}.jpg")
    outputs = {}
    for backend, model in (("onnxruntime", n_onnx), ("torch", n_model_dir)):
        out = tmp_path / backend
        code = main(["predict", str(images), "--model", str(model), "--backend", backend, "--output", str(out),
                     "--threshold", "0.0", "--device", "cpu", "--no-save-images"])
        assert code == 0
        outputs[backend] = json.loads((out / "predictions.json").read_text())
    assert len(outputs["onnxruntime"]) == len(outputs["torch"]) == 600
    # the data set's ids (written into the model folder's config) travel through the export's metadata too
    dataset_ids = json.loads((n_model_dir / "config.json").read_text())["dataset_category_ids"]
    assert dataset_ids[0] == 1
    for records in outputs.values():
        assert all(r["dataset_category_id"] == dataset_ids[r["category_id"]] for r in records)

    def as_detections(records):
        per_image = {}
        for r in records:
            x, y, w, h = r["bbox"]
            per_image.setdefault(r["file_name"], []).append((r["score"], r["category_id"], [x, y, x + w, y + h]))
        return [Detections(np.array([d[0] for d in v]), np.array([d[1] for d in v]), np.array([d[2] for d in v]))
                for _, v in sorted(per_image.items())]

    report = match_detections(as_detections(outputs["torch"]), as_detections(outputs["onnxruntime"]), top=100,
                              score_tol=2e-3, box_tol=0.5)
    assert report.fraction == 1.0, report.summary()


def test_runtime_errors_are_one_line(tmp_path) -> None:
    from dfine.errors import DFineError

    with pytest.raises(DFineError, match="no such ONNX file"):
        OnnxDetector(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(DFineError, match="cannot be loaded by ONNX Runtime") as error:
        OnnxDetector(tmp_path / "junk.onnx")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("flag", ["--half", "--bf16", "--half-head", "--compile"])
def test_predict_cli_rejects_torch_only_flags_for_onnxruntime(flag, n_onnx, tmp_path, error_line) -> None:
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    code = main(["predict", str(tmp_path / "a.png"), "--model", str(n_onnx), "--backend", "onnxruntime", flag])
    assert code == 2 and "do not apply to the onnxruntime backend" in error_line()


def test_predict_cli_half_head_needs_half(n_model_dir, tmp_path, error_line) -> None:
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    code = main(["predict", str(tmp_path / "a.png"), "--model", str(n_model_dir), "--half-head", "--device", "cpu",
                 "--output", str(tmp_path / "out")])
    assert code == 2 and "half_head (--half-head) runs the head in the body's half precision" in error_line()


def test_predict_cli_bf16_on_the_cpu(n_model_dir, tmp_path, capsys) -> None:
    Image.new("RGB", (64, 48), (90, 120, 200)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "a.png"), "--model", str(n_model_dir), "--bf16", "--half-head",
                 "--device", "cpu", "--output", str(out), "--threshold", "0", "--no-progress"]) == 0
    records = json.loads((out / "predictions.json").read_text())
    assert records and all(len(r["bbox"]) == 4 for r in records)


def _batch_probe_onnx(path, batch: int) -> None:
    """A graph with dfine's interface and a fixed batch whose single detection tells each image apart: its score is
    the image's mean pixel and its box is (w, h, w, h) of its orig_target_sizes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=1),
             helper.make_node("Reshape", ["mean", "shape_b1"], ["scores"]),
             helper.make_node("Mul", ["scores", "zero"], ["nil"]),
             helper.make_node("Cast", ["nil"], ["labels"], to=TensorProto.INT64),
             helper.make_node("Concat", ["orig_target_sizes", "orig_target_sizes"], ["wh2"], axis=1),
             helper.make_node("Cast", ["wh2"], ["wh2_f"], to=TensorProto.FLOAT),
             helper.make_node("Reshape", ["wh2_f", "shape_b14"], ["boxes"])]
    constants = {"shape_b1": np.array([-1, 1], np.int64), "shape_b14": np.array([-1, 1, 4], np.int64),
                 "zero": np.array(0.0, np.float32)}
    graph = helper.make_graph(
        nodes, "batch_probe",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 32, 32]),
         helper.make_tensor_value_info("orig_target_sizes", TensorProto.INT64, [batch, 2])],
        [helper.make_tensor_value_info("labels", TensorProto.INT64, [batch, 1]),
         helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [batch, 1, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 1])],
        [numpy_helper.from_array(v, k) for k, v in constants.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"class_names": json.dumps(["thing"])})
    onnx.save(model, str(path))


@pytest.mark.parametrize("count", [1, 3, 4, 5])
def test_a_fixed_batch_graph_takes_any_number_of_images(count, tmp_path) -> None:
    """A graph exported with --batch-size 2 gets images two at a time; a last odd one is padded, not lost (and
    does not recurse for ever)."""
    path = tmp_path / "b2.onnx"
    _batch_probe_onnx(path, batch=2)
    detector = OnnxDetector(path)
    assert detector.batch == 2
    pictures = [Image.new("RGB", (40 + 10 * i, 30 + i), (20 * i + 20,) * 3) for i in range(count)]
    results = detector.predict(pictures, threshold=0.0)
    assert len(results) == count
    for i, (picture, result) in enumerate(zip(pictures, results, strict=True)):
        assert result["scores"].tolist() == pytest.approx([(20 * i + 20) / 255], rel=1e-5)
        assert result["boxes"].tolist() == [[picture.width, picture.height] * 2]
