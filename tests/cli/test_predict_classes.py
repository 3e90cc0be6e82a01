"""``dfine predict --classes``: only the named classes reach predictions.json and the pictures."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from test_predict_cli import _error_line, _tiny_onnx

from dfine.cli.main import main
from dfine.errors import DFineError
from dfine.predict.files import class_indices


@pytest.fixture
def cat_dog_onnx(tmp_path):
    """The tiny graph (one detection of label 0 and one of label 1 per image) with classes cat and dog."""
    import onnx

    path = tmp_path / "tiny.onnx"
    _tiny_onnx(path)
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {"dfine_version": "0.1", "class_names": '["cat", "dog"]'})
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize(("classes", "kept"), [(None, {"cat", "dog"}), ("dog", {"dog"}), ("Cat, 1", {"cat", "dog"}),
                                               ("0", {"cat"})])
def test_only_the_named_classes_are_kept(cat_dog_onnx, tmp_path, classes, kept) -> None:
    Image.new("RGB", (64, 48), (30, 60, 90)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    argv = ["predict", str(tmp_path / "a.png"), "--model", str(cat_dog_onnx), "--output", str(out), "--no-progress",
            "--threshold", "0.1"]
    assert main(argv + (["--classes", classes] if classes else [])) == 0
    records = json.loads((out / "predictions.json").read_text())
    assert {r["category_name"] for r in records} == kept and len(records) == len(kept)
    assert (out / "a.png").is_file()


@pytest.mark.parametrize(("classes", "message"), [
    ("dgo", "the model has no class 'dgo'; did you mean 'dog'? (dfine info MODEL lists its classes)"),
    ("7", "class index 7 is out of range: the model has 2 classes (0..1)"),
    (" , ", "no class given: name at least one, e.g. --classes person,car"),
])  # fmt: skip
def test_unknown_classes_are_one_line(cat_dog_onnx, tmp_path, capsys, classes, message) -> None:
    Image.new("RGB", (64, 48)).save(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "a.png"), "--model", str(cat_dog_onnx), "--output", str(tmp_path / "o"),
                 "--classes", classes, "--no-progress"]) == 2
    assert _error_line(capsys).endswith(message)
    assert not (tmp_path / "o" / "predictions.json").exists()


def test_class_indices_accepts_lists_and_names_in_any_case() -> None:
    assert class_indices(["Dog", 0, "dog"], ["cat", "dog"]) == [0, 1]
    assert class_indices("1", ["2", "0", "1"]) == [2]  # classes named by numbers: the name wins over the index
    with pytest.raises(DFineError, match="no class 'bird'"):
        class_indices("bird", ["cat", "dog"])


def test_an_export_without_class_names_takes_label_indices(tmp_path) -> None:
    """An .onnx file without class_names metadata still has labels: --classes 1 keeps label 1, and a name is
    refused for what it is (no names), not as 'out of range: the model has 0 classes (0..-1)'."""
    import onnx

    path = tmp_path / "tiny.onnx"
    _tiny_onnx(path)
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.save(proto, str(path))
    Image.new("RGB", (64, 48)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "a.png"), "--model", str(path), "--output", str(out), "--no-progress",
                 "--threshold", "0.1", "--classes", "1"]) == 0
    records = json.loads((out / "predictions.json").read_text())
    assert [r["category_id"] for r in records] == [1]
    with pytest.raises(DFineError, match="names no classes"):
        class_indices("cat", [])
    with pytest.raises(DFineError, match="class index -1 is not a label"):
        class_indices("-1", [])


def test_a_name_given_to_several_classes_keeps_them_all() -> None:
    """A model whose class list repeats a name (two 'person' rows, or 'Car' and 'car') keeps every class of that
    name: records only show the name, so keeping one of them would silently drop detections the user asked for."""
    assert class_indices("person", ["person", "car", "Person"]) == [0, 2]
    assert class_indices("car,0", ["person", "car", "Person"]) == [0, 1]


def test_a_superscript_digit_is_an_unknown_name() -> None:
    with pytest.raises(DFineError, match="no class '²'"):  # a digit to str.isdigit, not to int()
        class_indices("²", ["cat", "dog"])


def test_the_command_the_unknown_class_message_suggests_exists(cat_dog_onnx, tmp_path, capsys) -> None:
    # it suggested 'dfine info --model M', which `dfine info` (a positional MODEL) refuses
    from dfine.cli.main import build_parser

    Image.new("RGB", (64, 48)).save(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "a.png"), "--model", str(cat_dog_onnx), "--output", str(tmp_path / "o"),
                 "--classes", "bird", "--no-progress"]) == 2
    suggested = capsys.readouterr().err.split("(dfine ")[1].split(" lists")[0].split()
    assert build_parser().parse_args([*suggested[:-1], str(cat_dog_onnx)]).command == "info"
