"""OpenVINO export and runtime: the IR's contract, parity with PyTorch where PyTorch is not installed, the choice of
precision, the commands that run an .xml, and one-line errors for files that cannot be an IR of ours."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import dfine
from dfine.cli.main import main
from dfine.data import make_synthetic_dataset
from dfine.errors import DFineError, InputFileError
from dfine.export.verify import Detections, check_images, match_detections

ov = pytest.importorskip("openvino")

from dfine.runtime.openvino import OpenVinoDetector, supported_precisions  # noqa: E402


@pytest.fixture(scope="module")  # an export checked against PyTorch, once for the module (~40 s)
def n_ir(tmp_path_factory, n_model_dir):
    """The N model exported through the command line in f32 (checked against PyTorch as part of the command)."""
    path = tmp_path_factory.mktemp("ir") / "dfine-n.xml"
    code = main(["export", "--model", str(n_model_dir), "--format", "openvino", "--precision", "f32",
                 "--output", str(path)])
    assert code == 0 and path.is_file() and path.with_suffix(".bin").is_file()
    return path


def test_ir_contract(n_ir, model_n, capsys) -> None:
    model = ov.Core().read_model(str(n_ir))
    assert [p.get_any_name() for p in model.inputs] == ["images", "orig_target_sizes"]
    assert [p.get_any_name() for p in model.outputs] == ["labels", "boxes", "scores"]
    assert str(model.input("images").get_partial_shape()) == "[1,3,320,320]"
    assert model.input("orig_target_sizes").get_element_type().get_type_name() == "i64"
    assert model.output("labels").get_element_type().get_type_name() == "i64"
    assert str(model.output("boxes").get_partial_shape()) == "[1,300,4]"
    meta = {k: v.astype(str) for k, v in model.get_rt_info()["dfine"].items()}
    assert json.loads(meta["class_names"]) == model_n.config.class_names
    assert meta["precision"] == meta["inference_precision"] == "f32" and meta["orig_target_sizes"] == "width,height"
    assert meta["decoder_layers"] == "3/3"
    assert main(["info", str(n_ir)]) == 0
    out = capsys.readouterr().out
    assert "format:      OpenVINO IR" in out and "runs in:     f32" in out and "decoder:     3 of 3 layers run" in out
    assert "images: f32 [1,3,320,320]" in out and "classes:     80" in out


def test_runtime_without_torch_matches_torch(n_ir, n_model_dir, tmp_path) -> None:
    paths = []
    for i, picture in enumerate(check_images([(500, 375), (375, 500)], seed=21)):
        paths.append(tmp_path / f"img{i}.png")
        picture.save(paths[-1])
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["torch"] = None  # any attempt to import torch (or ONNX Runtime) now fails
        sys.modules["onnxruntime"] = None
        from dfine.export.formats import open_exported
        opened = open_exported({str(n_ir)!r}, device="cpu", threads=2)
        assert opened.description == "OpenVINO CPU, f32", opened.description
        results = opened.model.predict({[str(p) for p in paths]!r}, threshold=0.0)
        assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
        print(json.dumps([{{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in r.items()}}
                          for r in results]))
    """)
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert len(results) == 2 and len(results[0]["scores"]) == 300
    reference = dfine.Predictor.from_pretrained(n_model_dir, device="cpu").predict(paths, threshold=0.0)
    ref = [Detections(r["scores"].double().numpy(), r["labels"].numpy(), r["boxes"].double().numpy())
           for r in reference]
    got = [Detections(np.array(r["scores"]), np.array(r["labels"]), np.array(r["boxes"])) for r in results]
    report = match_detections(ref, got, top=100, score_tol=1e-3, box_tol=0.5)  # half a pixel
    assert report.fraction == 1.0, report.summary()


def test_precision_choice(n_ir, model_n, monkeypatch) -> None:
    """Every precision the CPU runs is checked; the fastest verified one wins; a failing f32 or asked-for precision
    is an error, a failing reduced precision is only left out."""
    import dfine.export.openvino as exporter

    supported = supported_precisions()
    assert supported[0] == "f32" and set(supported) <= {"f32", "bf16", "f16"}
    candidates = exporter.choose_precision(model_n, n_ir, (320, 320), 1, None, True, 2, None)
    assert [c.precision for c in candidates] == supported
    assert candidates[0].failure is None and candidates[0].report.fraction == 1.0
    verified = [c for c in candidates if c.failure is None]
    assert all(c.median_ms > 0 for c in verified) if len(verified) > 1 else verified[0].median_ms is None

    calls = []

    def fake_compare(model, run, size, batch, half, backend, processor=None, uncertainty=False):
        calls.append(backend)
        if backend != "OpenVINO f32":
            raise DFineError(f"{backend} check failed: made up")

    monkeypatch.setattr(exporter, "compare_with_torch", fake_compare)
    chosen = exporter.choose_precision(model_n, n_ir, (320, 320), 1, None, True, 2, None)
    assert [c.precision for c in chosen if c.failure is None] == ["f32"]
    assert calls == [f"OpenVINO {p}" for p in supported]
    if "bf16" in supported:
        with pytest.raises(DFineError, match="OpenVINO bf16 check failed"):
            exporter.choose_precision(model_n, n_ir, (320, 320), 1, "bf16", True, 2, None)
    # without a check nothing reduced is chosen silently
    assert [c.precision for c in exporter.choose_precision(model_n, n_ir, (320, 320), 1, None, False, 2, None)] \
        == ["f32"]
    # the runtime: an asked-for precision is used when the CPU runs it, refused in one line when not
    detector = OpenVinoDetector(n_ir, threads=1, precision=supported[-1])
    assert detector.inference_precision == supported[-1]
    assert f"OpenVINO CPU, {supported[-1]}" == detector.description
    missing = next((p for p in ("f16", "bf16") if p not in supported), None)
    if missing is not None:
        with pytest.raises(DFineError, match=f"this CPU does not run OpenVINO in {missing}"):
            OpenVinoDetector(n_ir, precision=missing)


def test_predict_val_and_benchmark_run_an_ir(n_ir, tmp_path, capsys) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for i, picture in enumerate(check_images([(320, 240), (240, 320)], seed=5)):
        picture.save(images / f"p{i}.jpg")
    out = tmp_path / "out"
    assert main(["predict", str(images), "--model", str(n_ir), "--output", str(out), "--threshold", "0.0",
                 "--no-save-images", "--no-progress"]) == 0
    records = json.loads((out / "predictions.json").read_text())
    assert len({r["file_name"] for r in records}) == 2 and {"bbox", "score", "category_name"} <= set(records[0])
    assert main(["benchmark", "--model", str(n_ir), "--iters", "1", "--warmup", "0", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "backend:     openvino: OpenVINO CPU, f32" in text and "input 1x3x320x320" in text
    # val with a report: an exported graph returns no box uncertainty, so no uncertainty report is promised
    data = make_synthetic_dataset(tmp_path / "data", num_train=1, num_val=2, image_size=(320, 320), format="yolo")
    data.write_text(data.read_text().split("names:")[0] + "names: [" + ", ".join(f"c{i}" for i in range(80)) + "]\n")
    report = tmp_path / "report"
    assert main(["val", "--model", str(n_ir), "--data", str(data), "--output", str(report), "--threads", "1"]) == 0
    text = capsys.readouterr().out
    written = "metrics.json, predictions.json, per_class_ap.png, pr_curve.png and confusion_matrix.png"
    assert f"wrote {written} to {report}" in text and "uncertainty" not in text
    assert json.loads((report / "metrics.json").read_text())["num_images"] == 2
    assert not (report / "uncertainty.json").exists()
    for argv, message in (
        (["predict", str(images), "--model", str(n_ir), "--output", str(out), "--decoder-layers", "2"],
         "--decoder-layers do not apply to the openvino backend"),
        (["predict", str(images), "--model", str(n_ir), "--output", str(out), "--device", "cuda"],
         "the openvino backend runs on the CPU"),
        (["benchmark", "--model", str(n_ir), "--precision", "f32", "--backend", "onnxruntime"],
         "--precision chooses OpenVINO's inference precision: it applies to --backend openvino only"),
        (["export", "--model", "dfine-n-coco", "--format", "onnx", "--precision", "bf16"],
         "--precision chooses OpenVINO's inference precision: it does not apply to --format onnx"),
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


def _other_ir(folder) -> object:
    """An IR that is not a dfine export: one input ``x``, a ReLU."""
    from openvino import opset13 as ops

    x = ops.parameter([1, 3, 8, 8], np.float32, name="x")
    model = ov.Model([ops.relu(x)], [x], "other")
    path = folder / "other.xml"
    ov.save_model(model, str(path))
    return path


def test_bad_irs_are_one_line_naming_the_file(n_ir, tmp_path, error_line, capsys) -> None:
    other = _other_ir(tmp_path)
    truncated = tmp_path / "truncated.xml"
    truncated.write_bytes(n_ir.read_bytes()[:3000])
    shutil.copy(n_ir.with_suffix(".bin"), truncated.with_suffix(".bin"))
    short_bin = tmp_path / "short.xml"
    shutil.copy(n_ir, short_bin)
    short_bin.with_suffix(".bin").write_bytes(n_ir.with_suffix(".bin").read_bytes()[:1000])
    lonely = tmp_path / "lonely.xml"
    shutil.copy(n_ir, lonely)
    garbage = tmp_path / "garbage.xml"
    garbage.write_text("<annotation><object/></annotation>")  # a Pascal VOC file, say
    (tmp_path / "empty.xml").write_bytes(b"")
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    check_images([(64, 48)])[0].save(pictures / "a.png")
    cases = [
        (other, other, "not a dfine export: inputs are ['x']"),
        (truncated, truncated, "cannot be read by OpenVINO (Error parsing element attribute"),
        (short_bin, short_bin.with_suffix(".bin"), "cannot be read by OpenVINO (Incorrect weights in bin file!)"),
        (lonely, lonely.with_suffix(".bin"), "missing: an OpenVINO IR keeps its weights in a .bin beside the .xml"),
        (garbage, garbage, "not an OpenVINO IR (no <net> element at its start)"),
        (tmp_path / "empty.xml", tmp_path / "empty.xml", "empty file, not an OpenVINO IR"),
        (tmp_path / "none.xml", tmp_path / "none.xml", "no such OpenVINO IR file"),
    ]
    for path, named, message in cases:
        with pytest.raises(InputFileError) as error:
            OpenVinoDetector(path)
        assert str(error.value) == f"{named}: {message}" or str(error.value).startswith(f"{named}: {message}"), \
            str(error.value)
        assert "\n" not in str(error.value)
        if path is not other:  # an IR of another model is described, as an .onnx of another model is
            assert main(["info", str(path)]) == 2
            assert f"{named}: {message}" in error_line()
        assert main(["predict", str(pictures), "--model", str(path), "--output", str(tmp_path / "out")]) == 2
        assert f"{named}: {message}" in error_line()
    assert main(["info", str(other)]) == 0
    assert "metadata:    none from dfine export (not a dfine export?)" in capsys.readouterr().out


def test_openvino_missing_is_the_install_line(n_ir, tmp_path, monkeypatch, error_line) -> None:
    import dfine.runtime.openvino as runtime

    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.setattr(runtime, "_CORE", [])
    install = 'pip install "dfine[openvino]"'
    for argv in (["predict", str(tmp_path), "--model", str(n_ir), "--output", str(tmp_path / "out")],
                 ["export", "--model", "dfine-n-coco", "--format", "openvino", "--output", str(tmp_path / "m.xml")],
                 ["info", str(n_ir)], ["benchmark", "--model", str(n_ir)]):
        assert main(argv) == 2
        line = error_line()
        assert "openvino, which is not installed" in line and line.endswith(install), line
    with pytest.raises(DFineError, match='needs openvino, which is not installed: pip install "dfine\\[openvino\\]"'):
        OpenVinoDetector(n_ir)
