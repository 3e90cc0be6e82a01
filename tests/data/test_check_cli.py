"""``dfine check --data D``: the data set check of training as a command, with counts per class and a preview."""

from __future__ import annotations

from pathlib import Path

import pytest
from datahelpers import write_yolo
from PIL import Image

from dfine.cli.main import main

LABELS = {"a": "0 0.5 0.5 0.5 0.5\n1 0.25 0.25 0.2 0.2\n", "b": "1 0.5 0.5 0.3 0.3\n1 0.7 0.7 0.2 0.2\n"}


def _table(out: str) -> dict[str, list[int]]:
    """class name -> box counts per split, read back from the printed table."""
    lines = out.split("Boxes per class:\n", 1)[1].splitlines()[1:]
    return {line.split()[1]: [int(n) for n in line.split()[2:]] for line in lines if line.strip()[:1].isdigit()}


def test_a_good_data_set_passes_with_counts_per_class_and_a_preview(tmp_path: Path, capsys) -> None:
    data = write_yolo(tmp_path / "data", LABELS, ["cat", "dog"], size=(96, 64))
    preview = tmp_path / "out" / "preview.png"
    assert main(["check", "--data", str(data), "--preview", str(preview), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "train: 2 images (0 without objects), 4 boxes" in out and "Data set OK." in out
    assert _table(out) == {"cat": [1, 1], "dog": [3, 0]}  # train, val (the val image has one class-0 box)
    assert f"wrote {preview} (2 train images with their boxes)" in out
    with Image.open(preview) as picture:
        assert picture.format == "PNG" and picture.width > 2 * 96


def test_only_the_splits_asked_for(tmp_path: Path, capsys) -> None:
    data = write_yolo(tmp_path / "data", LABELS, ["cat", "dog"])
    assert main(["check", "--data", str(data), "--split", "val", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "val: 1 images" in out and "train:" not in out
    assert _table(out) == {"cat": [1], "dog": [0]}


def test_problems_are_listed_and_the_exit_status_is_2(tmp_path: Path, capsys) -> None:
    data = write_yolo(tmp_path / "data", LABELS, ["cat", "dog"])
    broken = tmp_path / "data" / "images" / "train" / "b.png"
    broken.write_bytes(b"not a picture")
    assert main(["check", "--data", str(data), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert "Problems (must be fixed):" in captured.out and str(broken) in captured.out
    assert "Data set OK." not in captured.out
    assert captured.err.strip() == "dfine check: 1 problem(s) to fix (1 in train)"


@pytest.mark.parametrize(("argv", "message"), [
    (["--split", "test"], "no 'test' split (found: train, val)"),
    (["--preview", "p.gif"], "--preview p.gif: the picture is written as JPEG or PNG"),
])
def test_bad_options_are_one_line(tmp_path: Path, argv: list[str], message: str, capsys) -> None:
    data = write_yolo(tmp_path / "data", LABELS, ["cat", "dog"])
    assert main(["check", "--data", str(data), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_a_preview_that_cannot_be_written_is_one_line(tmp_path: Path, capsys) -> None:
    data = write_yolo(tmp_path / "data", LABELS, ["cat", "dog"])
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder is needed")
    assert main(["check", "--data", str(data), "--preview", str(blocker / "p.jpg"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--preview {blocker / 'p.jpg'}: cannot be written" in err


def test_a_missing_test_split_is_a_warning_unless_asked_for(tmp_path: Path, capsys) -> None:
    # Roboflow's data.yaml names a test split even when the export has none; training does not read it.
    data = write_yolo(tmp_path / "data", LABELS, ["cat", "dog"])
    data.write_text('{"train": "images/train", "val": "images/val", "test": "../test/images", "names": ["cat", "dog"]}')
    assert main(["check", "--data", str(data), "--no-progress"]) == 0
    out = capsys.readouterr().out
    warnings = out.split("Warnings:\n", 1)[1]
    assert "test/images" in warnings and "does not exist" in warnings and "Data set OK." in out
    assert main(["check", "--data", str(data), "--split", "test", "--no-progress"]) == 2
    assert "test/images: image folder or list does not exist" in capsys.readouterr().out
