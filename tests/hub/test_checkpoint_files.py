"""One-line messages for checkpoint files torch cannot (or must not) read, and command-line argument checks."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch

from dfine.cli.main import main
from dfine.errors import InputFileError
from dfine.hub.readers import load_torch_file

NOT_A_CHECKPOINT = "not a PyTorch checkpoint (corrupt or not a checkpoint file)"


@pytest.mark.parametrize("content", [os.urandom(4096), b"hello world\n", b"PK\x03\x04 truncated zip"])
def test_unreadable_file_is_not_a_checkpoint(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    with pytest.raises(InputFileError) as error:
        load_torch_file(path)
    assert str(error.value) == f"{path}: {NOT_A_CHECKPOINT}"


def test_truncated_checkpoint_is_not_a_checkpoint(tmp_path: Path) -> None:
    torch.save({"weight": torch.ones(1000)}, tmp_path / "good.pth")
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match=r"cut\.pth: not a PyTorch checkpoint \(corrupt"):
        load_torch_file(tmp_path / "cut.pth")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(InputFileError, match=r"empty\.pth: empty file, not a PyTorch checkpoint"):
        load_torch_file(tmp_path / "empty.pth")


def test_checkpoint_with_arbitrary_objects_is_refused_safely(tmp_path: Path) -> None:
    """A genuine weights_only refusal names the class, and never suggests weights_only=False."""
    torch.save({"model": {"x": torch.ones(2)}, "args": argparse.Namespace(lr=0.1)}, tmp_path / "objects.pth")
    with pytest.raises(InputFileError) as error:
        load_torch_file(tmp_path / "objects.pth")
    message = str(error.value)
    assert "objects.pth: contains objects that cannot be loaded safely (argparse.Namespace)" in message
    assert "weights_only" not in message and "\n" not in message and "\x1b" not in message


def test_cli_error_for_a_text_file_saved_as_pth(tmp_path: Path, capsys) -> None:
    (tmp_path / "notes.pth").write_text("some text\n")
    assert main(["info", str(tmp_path / "notes.pth")]) == 2
    assert capsys.readouterr().err.strip() == f"dfine info: error: {tmp_path / 'notes.pth'}: {NOT_A_CHECKPOINT}"


def test_a_run_folder_points_to_its_model(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    (run / "last.pt").write_bytes(b"")
    (run / "metrics.jsonl").write_text("")
    assert main(["info", str(run)]) == 2
    assert capsys.readouterr().err.strip() == (f"dfine info: error: {run}: a training run folder, not a model: pass "
                                               f"{run / 'best'} or {run / 'last.pt'}")


def test_val_rejects_negative_workers(tmp_path: Path, capsys) -> None:
    assert main(["val", "--model", "dfine-n-coco", "--data", str(tmp_path), "--workers", "-1"]) == 2
    assert capsys.readouterr().err.strip() == ("dfine val: error: the number of data-loading workers must be an "
                                               "integer >= 0, got -1")
