"""An exported file whose dfine metadata was edited or damaged: one line naming the file, from the runtime and
from dfine predict, not a traceback halfway through the images."""

from __future__ import annotations

import pytest
from test_predict_cli import _error_line, _tiny_onnx

from dfine.cli.main import main
from dfine.errors import InputFileError


def _with_metadata(path, **props: str):
    import onnx

    _tiny_onnx(path)
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {"dfine_version": "0.1", **props})
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize(("props", "message"), [
    ({"class_names": "[not json"}, "its class_names metadata is not a JSON list"),
    ({"class_names": '{"0": "cat"}'}, "its class_names metadata is not a JSON list"),
    ({"dataset_category_ids": "7"}, "its dataset_category_ids metadata is not a JSON list"),
    ({"dataset_category_ids": '["a", "b"]'}, "its dataset_category_ids metadata is not a list of integers"),
])  # fmt: skip
def test_malformed_metadata_is_one_line(props, message, tmp_path, capsys) -> None:
    from dfine.runtime.onnx import OnnxDetector

    model = _with_metadata(tmp_path / "tiny.onnx", **props)
    with pytest.raises(InputFileError, match=f"^{model}: {message}"):
        OnnxDetector(model)
    from PIL import Image

    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "a.png"), "--model", str(model), "--output", str(tmp_path / "out"),
                 "--no-progress"]) == 2
    assert message in _error_line(capsys)


def test_well_formed_metadata_is_read(tmp_path) -> None:
    from dfine.runtime.onnx import OnnxDetector

    model = _with_metadata(tmp_path / "tiny.onnx", class_names='["cat", 5]', dataset_category_ids="[3, 9]")
    detector = OnnxDetector(model)
    assert detector.class_names == ["cat", "5"] and detector.dataset_category_ids == [3, 9]
