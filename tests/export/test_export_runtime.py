"""The onnxruntime-only runtime: works where PyTorch cannot be imported, and matches the torch backend."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

import dfine
from dfine.cli.main import main
from dfine.export.verify import Detections, check_images, match_detections
from dfine.runtime.onnx import OnnxDetector, preprocess


def test_preprocessing_is_the_processors(tmp_path) -> None:
    pictures = check_images([(333, 211), (640, 640), (97, 500)], seed=3)
    pictures.append(pictures[0].convert("L"))
    pictures.append(pictures[1].convert("RGBA"))
    expected = dfine.DFineImageProcessor(size={"height": 320, "width": 256})(pictures)["pixel_values"].numpy()
    assert np.array_equal(preprocess(pictures, (320, 256)), expected)


def test_array_preprocessing_is_the_processors() -> None:
    """NumPy input is read as dfine.Predictor reads it: uint8 HWC, grey HW, CHW and float arrays in [0, 1]."""
    from dfine.imaging.inputs import standardize_image

    rng = np.random.default_rng(4)
    arrays = [rng.integers(0, 256, (50, 70, 3), dtype=np.uint8), rng.integers(0, 256, (33, 41), dtype=np.uint8),
              rng.integers(0, 256, (3, 20, 30), dtype=np.uint8), rng.random((45, 35, 3), dtype=np.float32)]
    expected = dfine.DFineImageProcessor(size={"height": 64, "width": 96})(arrays)["pixel_values"].numpy()
    assert np.array_equal(preprocess([standardize_image(a) for a in arrays], (64, 96)), expected)


def test_runtime_without_torch_matches_torch(n_onnx, n_model_dir, tmp_path) -> None:
    paths = []
    for i, picture in enumerate(check_images([(500, 375), (375, 500)], seed=21)):
        paths.append(tmp_path / f"img{i}.png")
        picture.save(paths[-1])
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["torch"] = None  # any attempt to import torch now fails
        from dfine.runtime.onnx import OnnxDetector
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


def _batch_probe_onnx(path, batch: int | str, height: int | str = 32, width: int | str = 32,
                      metadata: dict[str, str] | None = None) -> None:
    """A graph with dfine's interface and a fixed batch whose single detection tells each image apart: its score is
    the image's mean pixel and its box is (w, h, w, h) of its orig_target_sizes. A str dimension is symbolic."""
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
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, height, width]),
         helper.make_tensor_value_info("orig_target_sizes", TensorProto.INT64, [batch, 2])],
        [helper.make_tensor_value_info("labels", TensorProto.INT64, [batch, 1]),
         helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [batch, 1, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 1])],
        [numpy_helper.from_array(v, k) for k, v in constants.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"class_names": json.dumps(["thing"]), **(metadata or {})})
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


@pytest.fixture
def probe(tmp_path) -> OnnxDetector:
    """The probe graph with a dynamic batch: a detection per image scoring its mean pixel, boxed (w, h, w, h)."""
    _batch_probe_onnx(tmp_path / "probe.onnx", batch="batch")
    return OnnxDetector(tmp_path / "probe.onnx")


def test_predict_takes_numpy_arrays(probe) -> None:
    """uint8 (H, W, 3) RGB and (H, W) grey, float (H, W, 3) in [0, 1], a list of them and a 4-D batch."""
    rgb = np.full((30, 40, 3), 51, np.uint8)
    grey = np.full((20, 10), 102, np.uint8)
    floating = np.full((16, 24, 3), 0.6, np.float32)

    def seen(results):
        return [(round(float(r["scores"][0]), 4), r["boxes"][0].tolist()) for r in results]

    assert seen(probe.predict(rgb, threshold=0.0)) == [(0.2, [40, 30, 40, 30])]
    assert seen(probe.predict([grey, floating], threshold=0.0)) == [(0.4, [10, 20, 10, 20]), (0.6, [24, 16, 24, 16])]
    assert seen(probe.predict(np.stack([rgb, rgb // 3]), threshold=0.0)) == [(0.2, [40, 30, 40, 30]),
                                                                              (0.0667, [40, 30, 40, 30])]
    # the same pixels as a picture give the same detections
    assert seen(probe.predict(Image.fromarray(rgb), threshold=0.0)) == seen(probe.predict(rgb, threshold=0.0))


@pytest.mark.parametrize("image, message", [
    (5, "cannot read an image of type int"),
    ({"pixels": 1}, "cannot read an image of type dict"),
    (np.zeros((4, 5, 6, 7, 8), np.uint8), "cannot read an image array of shape (4, 5, 6, 7, 8)"),
    (np.zeros((8, 8, 2), np.uint8), "cannot read an image array of shape (8, 8, 2)"),
    (np.full((8, 8, 3), 2.0, np.float32), "float images must hold values in [0, 1]"),
    (np.full((8, 8), 300, np.int32), "integer images must hold values in 0..255"),
    (np.zeros((8, 8, 3), bool), "cannot read an image array of dtype bool"),
    ([], "no images given"),
])
def test_predict_bad_images_are_one_line(image, message, probe) -> None:
    from dfine.errors import DFineError

    with pytest.raises(DFineError) as error:
        probe.predict(image)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan"), "0.5", None, True])
def test_predict_threshold_outside_0_1_is_one_line(threshold, probe) -> None:
    from dfine.errors import DFineError

    with pytest.raises(DFineError, match="threshold must be a number from 0 to 1, got "):
        probe.predict(np.zeros((8, 8, 3), np.uint8), threshold=threshold)


def test_numpy_input_needs_no_torch(tmp_path) -> None:
    _batch_probe_onnx(tmp_path / "probe.onnx", batch="batch")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any attempt to import torch now fails
        import numpy as np
        from dfine.runtime.onnx import OnnxDetector
        result = OnnxDetector({str(tmp_path / "probe.onnx")!r}).predict(np.full((9, 7), 255, np.uint8), threshold=0.5)
        print(result[0]["scores"].tolist(), result[0]["boxes"].tolist())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[1.0]", "[[7.0,", "9.0,", "7.0,", "9.0]]"]


def test_symbolic_height_and_width(tmp_path) -> None:
    """A graph whose input height and width are symbolic takes its size from the image_size metadata, or is refused
    in one line naming the file."""
    from dfine.errors import InputFileError

    _batch_probe_onnx(tmp_path / "sized.onnx", "batch", "height", "width", metadata={"image_size": "32,64"})
    detector = OnnxDetector(tmp_path / "sized.onnx")
    assert detector.image_size == (32, 64) and detector.batch is None
    assert len(detector.predict(np.zeros((8, 8, 3), np.uint8), threshold=0.0)) == 1
    _batch_probe_onnx(tmp_path / "free.onnx", "batch", "height", "width")
    with pytest.raises(InputFileError, match=r"free\.onnx: .*input height and width are not fixed") as error:
        OnnxDetector(tmp_path / "free.onnx")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("options, message", [
    ({"threads": -1}, "threads must be an integer >= 1 (0 or None: ONNX Runtime's choice), got -1"),
    ({"threads": "4"}, "threads must be an integer >= 1"),
    ({"providers": ["CPUExecutionProviderr"]}, "'CPUExecutionProviderr' is not an ONNX Runtime execution provider"),
    ({"providers": ["TensorrtExecutionProvider"]}, "none of the execution providers TensorrtExecutionProvider is "
                                                   "available in this ONNX Runtime"),
])
def test_bad_threads_and_providers_are_one_line(tmp_path, options, message) -> None:
    # a string thread count was int('4')-converted or a ValueError; ONNX Runtime answered a misspelt or missing
    # provider by running on the CPU with a banner on stderr
    from dfine.errors import DFineError
    from dfine.runtime.onnx import OnnxDetector

    model = tmp_path / "probe.onnx"
    _batch_probe_onnx(model, batch="batch")
    with pytest.raises(DFineError, match=re.escape(message)):
        OnnxDetector(model, **options)


def test_one_provider_name_and_a_portable_list_are_accepted(tmp_path) -> None:
    from dfine.runtime.onnx import OnnxDetector

    model = tmp_path / "probe.onnx"
    _batch_probe_onnx(model, batch="batch")
    for providers in ("CPUExecutionProvider", ["CUDAExecutionProvider", "CPUExecutionProvider"]):
        assert OnnxDetector(model, providers=providers).session.get_providers()[-1] == "CPUExecutionProvider"
