"""The `dfine` entry point: help without a subcommand, -v on either side of the subcommand."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from dfine.cli.main import build_parser, main


def test_plain_dfine_prints_help(capsys) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "usage: dfine" in out and "predict" in out and "train" in out


@pytest.mark.parametrize("argv", [["-v", "info", "dfine-n-coco"], ["info", "dfine-n-coco", "-v"],
                                  ["info", "-v", "dfine-n-coco"]])
def test_verbose_before_or_after_the_subcommand(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert args.verbose is True and args.command == "info"


def test_verbose_defaults_off() -> None:
    assert build_parser().parse_args(["info", "dfine-n-coco"]).verbose is False


def _corrupt_deflate_tiff(jpeg: Path) -> Path:
    """Replace ``jpeg`` by a deflate-compressed TIFF whose compressed pixels are garbage: its header is sound and
    its strips lie within the file, so only decoding it (in a DataLoader worker) finds the problem."""
    from PIL import Image

    tiff = jpeg.with_suffix(".tif")
    with Image.open(jpeg) as image:
        image.convert("RGB").save(tiff, compression="tiff_deflate")
    jpeg.unlink()
    with Image.open(tiff) as image:
        start, length = image.tag_v2[273][0], image.tag_v2[279][0]
    data = bytearray(tiff.read_bytes())
    data[start + 2:start + length] = b"\xab" * (length - 2)
    tiff.write_bytes(bytes(data))
    return tiff


def test_an_image_failing_in_a_dataloader_worker_is_one_line(tmp_path: Path, capsys) -> None:
    from dfine.data import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "data", num_train=2, num_val=1, image_size=(64, 64), format="yolo",
                                  empty_fraction=0.0)
    bad = _corrupt_deflate_tiff(tmp_path / "data" / "images" / "train" / "train_00000.jpg")
    assert main(["train", "--data", str(data), "--epochs", "1", "--batch-size", "2", "--image-size", "64",
                 "--output", str(tmp_path / "run"), "--workers", "1", "--no-pretrained-backbone", "--no-progress",
                 "--set", "num_queries=10"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"dfine train: error: {bad}: unreadable or corrupt image") and "\n" not in err


@pytest.mark.parametrize("argv, problem", [
    (["predict", "", "--model", "dfine-n-coco"], "the source is an empty string"),
    (["predict", "{images}", "--model", "dfine-n-coco", "--output", ""], "the output folder is an empty string"),
    (["predict", "{images}", "--model", ""], "model is an empty string"),
    (["check", "--data", ""], "the data set path is an empty string"),
    (["val", "--model", "dfine-n-coco", "--data", ""], "data is an empty string"),
    (["train", "--data", "{images}", "--output", ""], "output is an empty string"),
])
def test_an_empty_path_is_refused_not_read_as_the_working_folder(argv, problem, tmp_path, monkeypatch,
                                                                capsys) -> None:
    # Path("") is ".": `dfine predict "$UNSET"` predicted every picture of the working folder, --output "" wrote
    # into it, --data "" looked for a data set there
    (tmp_path / "images").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "images" / "a.png")
    Image.new("RGB", (32, 32)).save(tmp_path / "b.png")
    monkeypatch.chdir(tmp_path)
    assert main([a.format(images=tmp_path / "images") for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and problem in err, err
    assert not (tmp_path / "predictions.json").exists()
