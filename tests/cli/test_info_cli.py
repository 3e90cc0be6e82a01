"""`dfine info` on an exported file whose metadata cannot be read: one line, not a traceback."""

from __future__ import annotations

import pytest
from PIL import Image
from test_predict_cli import _error_line, _tiny_onnx

from dfine.cli.main import main


@pytest.mark.parametrize("class_names", ["[not json", "5", '{"0": "cat"}'])
def test_info_on_malformed_class_names_metadata(class_names, tmp_path, capsys) -> None:
    model = tmp_path / "tiny.onnx"
    _tiny_onnx(model)
    import onnx

    proto = onnx.load(str(model))
    onnx.helper.set_model_props(proto, {"dfine_version": "0.1", "class_names": class_names})
    onnx.save(proto, str(model))
    assert main(["info", str(model)]) == 2
    line = _error_line(capsys)
    assert line.startswith(f"dfine info: error: {model}: its class_names metadata is not a JSON list of names")


def test_info_lists_the_class_names_of_an_export(tmp_path, capsys) -> None:
    model = tmp_path / "tiny.onnx"
    _tiny_onnx(model)
    import onnx

    proto = onnx.load(str(model))
    onnx.helper.set_model_props(proto, {"dfine_version": "0.1", "class_names": '["cat", "dog"]'})
    onnx.save(proto, str(model))
    assert main(["info", str(model)]) == 0
    assert "classes:     2\n             cat, dog\n" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["info", "predict"])
def test_empty_or_folder_onnx_path_says_what_it_is(command, tmp_path, capsys) -> None:
    # an empty file was described by `dfine info` as an ONNX model (IR 0, no inputs) and reported by ONNX Runtime
    # as "No graph was found in the protobuf"; a folder was "no such ONNX file"
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    folder = tmp_path / "folder.onnx"
    folder.mkdir()
    images = tmp_path / "images"  # predict refuses a source without pictures before it looks at the model
    images.mkdir()
    Image.new("RGB", (32, 32)).save(images / "a.png")
    for model, problem in [(empty, "empty file, not an ONNX model"), (folder, "is a folder, not an .onnx file")]:
        argv = ["info", str(model)] if command == "info" else [
            "predict", str(images), "--model", str(model), "--backend", "onnxruntime", "--output",
            str(tmp_path / "out")]
        assert main(argv) == 2
        assert _error_line(capsys) == f"dfine {command}: error: {model}: {problem}"


def test_info_describes_a_segmentation_model_with_its_mask_branch(tmp_path, capsys, caplog) -> None:
    """Loaded as what it is: not as a detector that drops the mask branch (with a warning) and counts parameters
    without it."""
    from seghelpers import save_tiny_segmentation_model

    import dfine

    model_dir = save_tiny_segmentation_model(tmp_path / "seg", image_size=160)
    params = sum(p.numel() for p in dfine.DFineForInstanceSegmentation.from_pretrained(model_dir).parameters())
    assert main(["info", str(model_dir)]) == 0
    out = capsys.readouterr().out
    assert f"parameters:  {params:,} " in out and "task:        instance segmentation" in out and "mask_dim 128" in out
    assert "loaded as DFineForObjectDetection" not in caplog.text
    assert main(["info", "dfine-n-coco"]) == 0
    assert "task:        object detection" in capsys.readouterr().out
