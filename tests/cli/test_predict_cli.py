"""`dfine predict` and `dfine info`: outputs on disk, and one-line errors with exit status 2 for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import dfine
from dfine.cli.main import main


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
    assert set(first) == {"image_id", "file_name", "category_id", "category_name", "bbox", "score", "uncertainty",
                          "edge_uncertainty"}
    assert first["uncertainty"] >= 0 and len(first["edge_uncertainty"]) == 4 and min(first["edge_uncertainty"]) >= 0
    assert first["category_name"] == dfine.DFineConfig.from_pretrained(model_dir).id2label[first["category_id"]]
    assert len(first["bbox"]) == 4 and 0 <= first["score"] <= 1
    assert sorted(p.name for p in out.glob("*.jpg")) == ["img0.jpg", "img1.jpg", "img2.jpg"]


def test_predict_matches_the_python_api(model_dir, image_dir, tmp_path) -> None:
    out = tmp_path / "out"
    # random weights score about 0.13: threshold 0 keeps detections to compare
    assert main(["predict", str(image_dir / "img1.jpg"), "--model", str(model_dir), "--output", str(out),
                 "--threshold", "0.0", "--no-save-images"]) == 0
    records = json.loads((out / "predictions.json").read_text())
    model = dfine.DFineForObjectDetection.from_pretrained(model_dir)
    processor = dfine.DFineImageProcessor.from_pretrained(model_dir)
    from PIL import Image

    image = Image.open(image_dir / "img1.jpg")
    with torch.no_grad():
        outputs = model(**processor(image), output_uncertainty=True)
    result = processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=[image.size[::-1]],
                                                     return_uncertainty=True)[0]
    assert len(records) == len(result["scores"]) > 0
    assert records[0]["score"] == pytest.approx(result["scores"][0].item(), abs=1e-5)
    assert records[0]["uncertainty"] == pytest.approx(result["uncertainty"][0].item(), abs=1e-5)
    assert records[0]["edge_uncertainty"] == pytest.approx(result["edge_uncertainty"][0].tolist(), abs=0.01)


def test_show_uncertainty_draws_bands_around_the_edges(model_dir, image_dir, tmp_path) -> None:
    import numpy as np
    from PIL import Image

    pictures = {}
    for flag in ([], ["--show-uncertainty"]):
        out = tmp_path / ("bands" if flag else "plain")
        assert main(["predict", str(image_dir / "img0.jpg"), "--model", str(model_dir), "--output", str(out),
                     "--threshold", "0.0", "--no-progress", *flag]) == 0
        pictures[bool(flag)] = np.asarray(Image.open(out / "img0.jpg"), dtype=np.int16)
    # this random model's boxes are tiny and their σ below a pixel, so the bands change few pixels (the drawing
    # itself is tested in tests/imaging/test_draw.py)
    assert (pictures[True] != pictures[False]).any()


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


def _predict(source, model, out, *extra) -> int:
    return main(["predict", str(source), "--model", str(model), "--output", str(out), "--no-progress", *extra])


@pytest.fixture()
def mixed_dir(tmp_path, image_dir):
    """Two good images and one `.jpg` of random bytes."""
    directory = tmp_path / "mixed"
    directory.mkdir()
    for name in ("img0.jpg", "img1.jpg"):
        (directory / name).write_bytes((image_dir / name).read_bytes())
    (directory / "bad.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    return directory


@pytest.mark.parametrize("as_glob", [False, True])
def test_unreadable_image_in_a_folder_or_glob_is_skipped(as_glob, model_dir, mixed_dir, tmp_path, capsys,
                                                         caplog) -> None:
    source = str(mixed_dir / "*.jpg") if as_glob else str(mixed_dir)
    out = tmp_path / "out"
    assert _predict(source, model_dir, out, "--threshold", "0.0") == 0
    records = json.loads((out / "predictions.json").read_text())
    assert {r["file_name"].split("/")[-1] for r in records} == {"img0.jpg", "img1.jpg"}
    assert sorted(p.name for p in out.iterdir()) == ["img0.jpg", "img1.jpg", "predictions.json"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "bad.jpg" in warnings[0] and "not an image" in warnings[0]
    assert "skipped 1 unreadable image" in capsys.readouterr().out


def test_all_images_unreadable_is_an_error(model_dir, tmp_path, capsys) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    for name in ("a.jpg", "b.png"):
        (folder / name).write_bytes(b"not an image at all")
    assert _predict(folder, model_dir, tmp_path / "o") == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]  # after a warning per file, where logging prints
    assert line.startswith("dfine predict: error:")
    assert "none of its 2 images could be read" in line and "a.jpg" in line
    assert not (tmp_path / "o" / "predictions.json").exists()


def test_python_api_reports_skipped_files(model_dir, mixed_dir, tmp_path) -> None:
    from dfine.predict.files import predict_source
    from dfine.predict.predictor import Predictor

    predictor = Predictor.from_pretrained(model_dir, device="cpu")
    result = predict_source(predictor, mixed_dir, tmp_path / "out", threshold=0.0, batch_size=2, progress=False)
    assert result.images == 2 and result.detections == len(json.loads(result.predictions.read_text()))
    assert [error.path for error in result.skipped] == [str(mixed_dir / "bad.jpg")]
    assert [p.name for p in result.pictures] == ["img0.jpg", "img1.jpg"]


@pytest.mark.parametrize("size", ["0", "-32", "100"])
def test_bad_image_size_is_one_line(size, model_dir, image_dir, tmp_path, capsys) -> None:
    assert _predict(image_dir, model_dir, tmp_path / "o", "--image-size", size) == 2
    assert f"--image-size must be a positive multiple of 32, got {size}" in _error_line(capsys)


@pytest.mark.parametrize("case", ["file", "below_a_file"])
def test_output_that_cannot_be_a_folder(case, model_dir, image_dir, tmp_path, capsys) -> None:
    a_file = tmp_path / "afile"
    a_file.write_text("keep me")
    output = a_file if case == "file" else a_file / "sub"
    assert _predict(image_dir / "img0.jpg", model_dir, output) == 2
    line = _error_line(capsys)
    assert line.startswith("dfine predict: error:") and str(output) in line
    assert a_file.read_text() == "keep me"


def test_same_stem_different_extensions_do_not_overwrite(model_dir, image_dir, tmp_path) -> None:
    from PIL import Image

    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    picture = Image.open(image_dir / "img0.jpg")
    # Different sizes, so each annotated picture can be traced to its input.
    picture.resize((96, 64)).save(source / "x.jpg")
    picture.resize((80, 72)).save(source / "x.tif")
    picture.resize((64, 48)).save(source / "sub" / "x.jpg")
    out = tmp_path / "out"
    assert _predict(str(source / "**" / "x.*"), model_dir, out) == 0
    sizes = {p.name: Image.open(p).size for p in out.iterdir() if p.suffix == ".jpg"}
    assert sizes == {"x.jpg": (64, 48), "x.tif.jpg": (80, 72), "x_1.jpg": (96, 64)}  # sorted: src/sub/x.jpg first


def test_picture_names_are_unique_and_predictable() -> None:
    from pathlib import Path

    from dfine.predict.files import picture_name

    used: set[str] = set()
    names = [picture_name(Path(p), used) for p in ["a/x.jpg", "b/x.jpg", "x_1.jpg", "X.JPG", "y.tif", "y.tif.jpg",
                                                   "noext", "z.png"]]
    assert names == ["x.jpg", "x_1.jpg", "x_1_1.jpg", "X_2.JPG", "y.tif.jpg", "y.tif_1.jpg", "noext.jpg", "z.png"]


def _tiny_onnx(path) -> None:
    """An ONNX graph with dfine's export interface that returns two fixed detections per image, one box reaching
    past the top-left corner and one past the bottom-right (the inputs feed the outputs times zero, so ONNX
    Runtime keeps them)."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    constants = {"box_c": np.array([[[-10.0, -5.0, 50.0, 40.0], [150.0, 100.0, 900.0, 900.0]]], np.float32),
                 "label_c": np.array([[0, 1]], np.int64), "score_c": np.array([[0.9, 0.8]], np.float32),
                 "zero_f": np.array(0.0, np.float32), "zero_i": np.array(0, np.int64)}
    nodes = [helper.make_node("ReduceSum", ["images"], ["sum_f"], keepdims=0),
             helper.make_node("Mul", ["sum_f", "zero_f"], ["nil_f"]),
             helper.make_node("ReduceSum", ["orig_target_sizes"], ["sum_i"], keepdims=0),
             helper.make_node("Mul", ["sum_i", "zero_i"], ["nil_i"]),
             helper.make_node("Add", ["box_c", "nil_f"], ["boxes"]),
             helper.make_node("Add", ["score_c", "nil_f"], ["scores"]),
             helper.make_node("Add", ["label_c", "nil_i"], ["labels"])]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32]),
         helper.make_tensor_value_info("orig_target_sizes", TensorProto.INT64, [1, 2])],
        [helper.make_tensor_value_info("labels", TensorProto.INT64, [1, 2]),
         helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 2, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(v, k) for k, v in constants.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"class_names": json.dumps(["cat", "dog"])})
    onnx.save(model, str(path))


def test_onnx_file_picks_onnxruntime_and_boxes_are_clipped(image_dir, tmp_path) -> None:
    from PIL import Image

    model = tmp_path / "c1.onnx"
    _tiny_onnx(model)
    out = tmp_path / "out"
    assert _predict(image_dir / "img0.jpg", model, out) == 0  # no --backend
    records = json.loads((out / "predictions.json").read_text())
    assert [(r["category_name"], r["bbox"]) for r in records] == [("cat", [0.0, 0.0, 50.0, 40.0]),
                                                                  ("dog", [150.0, 100.0, 50.0, 100.0])]
    assert Image.open(out / "img0.jpg").size == (200, 200)


@pytest.mark.parametrize("backend", [None, "torch"])
def test_onnx_file_errors_name_the_backend(backend, image_dir, tmp_path, capsys) -> None:
    model = tmp_path / "c1.onnx"
    model.write_bytes(b"not a protobuf")
    extra = ["--backend", backend] if backend else []
    assert _predict(image_dir, model, tmp_path / "o", *extra) == 2
    line = _error_line(capsys)
    assert "unknown checkpoint type" not in line
    assert ("ONNX Runtime" if backend is None else "--backend onnxruntime") in line


def test_preset_warns_about_random_weights(model_dir, image_dir, tmp_path, caplog) -> None:
    assert _predict(image_dir / "img0.jpg", "dfine-n-coco", tmp_path / "a", "--image-size", "256") == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "dfine-n-coco" in warnings[0] and "random weights" in warnings[0]
    caplog.clear()
    assert _predict(image_dir / "img0.jpg", model_dir, tmp_path / "b") == 0
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_random_weights_reason(model_dir, tmp_path, monkeypatch) -> None:
    from dfine.predict.predictor import random_weights_reason

    assert "preset" in random_weights_reason("dfine-s-coco")
    assert "config file" in random_weights_reason(model_dir / "config.json")
    assert random_weights_reason(model_dir) is None
    assert random_weights_reason("ustc-community/dfine-small-coco") is None
    # A local folder wins over a preset of the same name, as in resolve_checkpoint.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dfine-s-coco").mkdir()
    assert random_weights_reason("dfine-s-coco") is None


def test_progress_bar_and_no_progress(model_dir, image_dir, tmp_path, capsys) -> None:
    args = ["predict", str(image_dir), "--model", str(model_dir), "--output", str(tmp_path / "o")]
    assert main(args) == 0
    assert "img/s" in capsys.readouterr().err  # tqdm's bar
    assert main([*args, "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


class _StopsOnSecondBatch:
    """A detector that finds one box per image, and is interrupted (Ctrl-C) on its second call."""

    class_names = ["thing"]

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, images, threshold=0.5):
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt
        keep = slice(None) if threshold < 0.9 else slice(0)
        return [{"scores": np.array([0.9])[keep], "labels": np.array([0])[keep],
                 "boxes": np.array([[1.0, 2.0, 30.0, 40.0]])[keep]} for _ in images]


def test_an_interrupted_run_leaves_no_partial_predictions(image_dir, tmp_path) -> None:
    """Records are streamed to a temporary file: Ctrl-C leaves neither a truncated predictions.json nor the
    temporary file; a whole run writes valid JSON, also when nothing is detected."""
    from dfine.predict.files import predict_source

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        predict_source(_StopsOnSecondBatch(), image_dir, out, batch_size=2, save_images=False, progress=False)
    assert list(out.iterdir()) == []
    detector = _StopsOnSecondBatch()
    run = predict_source(detector, image_dir, out, batch_size=3, save_images=False, progress=False)
    records = json.loads(run.predictions.read_text())
    assert run.detections == len(records) == 3 and [r["image_id"] for r in records] == [0, 1, 2]
    assert records[0]["bbox"] == [1.0, 2.0, 29.0, 38.0]
    run = predict_source(_StopsOnSecondBatch(), image_dir, out, threshold=0.95, batch_size=3, save_images=False,
                         progress=False)
    assert json.loads(run.predictions.read_text()) == [] and run.detections == 0


def test_a_photo_type_dfine_does_not_read_is_named_not_dropped(tmp_path, caplog) -> None:
    """A folder's .heic is left out with the line a training data set's folder gives it, not silently."""
    from PIL import Image

    from dfine.imaging.formats import unread_image_problem
    from dfine.predict.files import predict_source

    folder = tmp_path / "phone"
    folder.mkdir()
    Image.new("RGB", (40, 30)).save(folder / "a.png")
    (folder / "b.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    with caplog.at_level("WARNING", logger="dfine"):
        run = predict_source(_StopsOnSecondBatch(), folder, tmp_path / "out", save_images=False, progress=False)
    assert run.images == 1 and run.skipped == []
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"{folder / 'b.heic'}: left out: {unread_image_problem('b.heic')}"]


def test_onnx_backend_follows_device(image_dir, tmp_path, capsys, monkeypatch) -> None:
    # ONNX Runtime falls back to the CPU silently, so --device used to do nothing for an .onnx model
    model = tmp_path / "c1.onnx"
    _tiny_onnx(model)
    import onnxruntime as ort

    from dfine.runtime import onnx as runtime

    sessions = []
    create = runtime.create_session
    monkeypatch.setattr(runtime, "create_session", lambda *a, **k: sessions.append(create(*a, **k)) or sessions[-1])
    assert _predict(image_dir / "img0.jpg", model, tmp_path / "cpu", "--device", "cpu") == 0
    assert sessions[-1].get_providers() == ["CPUExecutionProvider"]
    assert _predict(image_dir / "img0.jpg", model, tmp_path / "bad", "--device", "bogus") == 2
    assert "unknown device 'bogus'" in _error_line(capsys)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert _predict(image_dir / "img0.jpg", model, tmp_path / "gpu", "--device", "cuda:1") == 2
    assert "CUDAExecutionProvider" in _error_line(capsys)


def test_subfolders_need_recursive_and_are_refused_before_the_model_loads(model_dir, tmp_path, capsys) -> None:
    from hf_oracle import natural_images

    for sub, picture in zip(("day", "night"), natural_images(2, 96, seed=1), strict=True):
        (tmp_path / "photos" / sub).mkdir(parents=True)
        picture.save(tmp_path / "photos" / sub / "x.jpg")
    # the model name is never read: the empty source is the error, at once
    assert main(["predict", str(tmp_path / "photos"), "--model", "not-loaded", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "its subfolders have some: --recursive" in err
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "photos"), "-r", "--model", str(model_dir), "--output", str(out),
                 "--threshold", "0.0", "--no-progress"]) == 0
    records = json.loads((out / "predictions.json").read_text())
    assert {Path(r["file_name"]).parent.name for r in records} == {"day", "night"}
    assert sorted(p.name for p in out.glob("*.jpg")) == ["x.jpg", "x_1.jpg"]  # one folder, names numbered


def test_tiled_prediction_on_the_command_line(model_dir, tmp_path, capsys) -> None:
    from hf_oracle import natural_images

    natural_images(1, 400, seed=2)[0].save(tmp_path / "big.jpg")
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "big.jpg"), "--model", str(model_dir), "--output", str(out),
                 "--tile", "256", "--threshold", "0.0", "--no-progress"]) == 0
    records = json.loads((out / "predictions.json").read_text())
    assert records and all(0 <= r["bbox"][0] and r["bbox"][0] + r["bbox"][2] <= 400.01 for r in records)
    # more boxes than one whole-image pass can give (its 300 queries): the tiles' own detections are kept
    assert len(records) > 300
    assert main(["predict", str(tmp_path / "big.jpg"), "--model", "not-loaded", "--tile", "8"]) == 2
    assert "the tile size must be an integer of at least 32 pixels, got 8" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "big.jpg"), "--model", "not-loaded", "--tile-overlap", "0.5"]) == 2
    assert "--tile-overlap needs --tile" in capsys.readouterr().err  # not silently ignored
