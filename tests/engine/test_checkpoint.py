"""Training checkpoints: atomic writes, weights_only loading, random state, and what a finished run leaves."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from dfine.engine import checkpoint as ckpt
from dfine.errors import CheckpointError, InputFileError
from dfine.model import DFineForObjectDetection


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint(path, {"epoch": 0, "weights": torch.arange(4.0)})
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):  # half a file, then the process "dies"
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as handle:
            handle.truncate(100)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(path, {"epoch": 1, "weights": torch.zeros(4)})
    monkeypatch.undo()
    data = torch.load(path, weights_only=True)
    assert data["epoch"] == 0 and torch.equal(data["weights"], torch.arange(4.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left behind


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_atomic_writes_get_the_permissions_of_any_new_file(tmp_path: Path) -> None:
    # a model folder is often copied to a server or container and read there by another user
    from dfine.utils.files import atomic_write_text

    previous = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "config.json", "{}")
        (tmp_path / "plain.txt").write_text("{}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "config.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o644


def test_rng_state_round_trip_is_weights_only(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached Gaussian in NumPy's state
    state = ckpt.capture_rng_state()
    expected = (random.random(), np.random.standard_normal(), torch.rand(3))
    ckpt.save_checkpoint(tmp_path / "rng.pt", {"rng": [state]})
    loaded = torch.load(tmp_path / "rng.pt", weights_only=True)["rng"][0]
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    ckpt.restore_rng_state(loaded)
    again = (random.random(), np.random.standard_normal(), torch.rand(3))
    assert again[0] == expected[0] and again[1] == expected[1] and torch.equal(again[2], expected[2])


def test_load_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="not found"):
        ckpt.load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(InputFileError, match=r"junk\.pt: not a PyTorch checkpoint"):
        ckpt.load_checkpoint(tmp_path / "junk.pt")
    torch.save({"model": {}}, tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match="not a dfine training checkpoint"):
        ckpt.load_checkpoint(tmp_path / "weights.pt")
    with pytest.raises(InputFileError, match="nothing to resume"):
        ckpt.resume_path(True, tmp_path)


def test_finished_run_files(trained_run) -> None:
    out = trained_run.output_dir
    names = {p.name for p in out.iterdir()}
    assert {"last.pt", "best_stage1.pt", "best", "metrics.jsonl", "results.png", "hparams.json",
            "preprocessor_config.json", "tensorboard", "train_batch0.jpg"} <= names
    assert {p.name for p in (out / "best").iterdir()} == {"config.json", "model.safetensors",
                                                          "preprocessor_config.json"}
    # every file of the run has the permissions a plain new file gets (atomic writes used to be owner-only)
    plain = stat.S_IMODE((out / "metrics.jsonl").stat().st_mode)
    for path in (out / "last.pt", out / "hparams.json", out / "best" / "model.safetensors",
                 out / "best" / "config.json", out / "train_batch0.jpg"):
        assert stat.S_IMODE(path.stat().st_mode) == plain, path
    data = torch.load(out / "last.pt", map_location="cpu", weights_only=True)  # no arbitrary objects inside
    assert data["format"] == ckpt.FORMAT and data["epoch"] == 1 and data["stage"] == 2
    assert data["class_names"] == ["circle", "square", "triangle"] and data["image_size"] == [160, 160]
    assert set(data["ema"]) == {"module", "updates", "decay", "warmups"} and data["ema"]["updates"] == 4
    assert data["config"]["freeze_backbone_batch_norms"] is False  # N trains its backbone BN
    assert len(data["rng"]) == 1 and "numpy" in data["rng"][0]
    assert data["best_metric"] == pytest.approx(trained_run.metrics["AP"])
    assert [h["epoch"] for h in trained_run.history] == [0, 1]
    assert all(len(h["lr_groups"]) == len(h["lr"]) and "backbone" in h["lr_groups"] for h in trained_run.history)
    assert all("AP" in h["eval"] for h in trained_run.history)


def test_last_pt_and_best_load_with_from_pretrained(trained_run) -> None:
    out = trained_run.output_dir
    data = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    from_last = DFineForObjectDetection.from_pretrained(out / "last.pt")  # prefers the EMA weights
    for name, value in from_last.state_dict().items():
        assert torch.equal(value, data["ema"]["module"][name]), name
    best = DFineForObjectDetection.from_pretrained(trained_run.best_model)
    assert not best.training and best.config.class_names == ["circle", "square", "triangle"]
    with torch.no_grad():
        out = best(torch.rand(1, 3, 160, 160))
    assert out.logits.shape == (1, 100, 3) and torch.isfinite(out.pred_boxes).all()


def test_unreadable_training_checkpoint_is_one_safe_line(tmp_path) -> None:
    """A corrupt last.pt or one holding arbitrary objects gets one line, never torch's 'weights_only=False'."""
    import argparse

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(InputFileError, match=r"corrupt\.pt: not a PyTorch checkpoint") as info:
        ckpt.load_checkpoint(corrupt)
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)

    pickled = tmp_path / "objects.pt"
    torch.save({"model": {}, "args": argparse.Namespace(lr=1.0)}, pickled)
    with pytest.raises(InputFileError, match=r"cannot be loaded safely \(argparse\.Namespace\)") as info:
        ckpt.load_checkpoint(pickled)
    assert "weights_only" not in str(info.value)


def test_a_kill_between_the_renames_of_best_keeps_the_previous_best(tmp_path: Path) -> None:
    """save_best_model moves best/ aside, then puts the new one in place: killed in between, only .best.old holds
    the best weights so far, and the next save (or a resume) must put them back rather than delete them."""
    from dfine.config.presets import preset_config
    from dfine.processing.processor import DFineImageProcessor

    model = DFineForObjectDetection(preset_config("dfine-n-coco", num_labels=2))
    best = ckpt.save_best_model(model, DFineImageProcessor(), tmp_path / "best")
    before = (best / "model.safetensors").read_bytes()
    best.rename(tmp_path / ".best.old")  # the state a kill between the renames leaves
    ckpt.recover_best_model(tmp_path / "best")
    assert (tmp_path / "best" / "model.safetensors").read_bytes() == before
    assert not (tmp_path / ".best.old").exists()
    ckpt.recover_best_model(tmp_path / "best")  # nothing to recover: nothing changes
    assert (tmp_path / "best" / "model.safetensors").read_bytes() == before
