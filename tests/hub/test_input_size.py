"""Every command sees one input size per model: a training checkpoint's, its folder's processor config, the
training size its config.json records, or 640."""

from __future__ import annotations

from pathlib import Path

import torch

from dfine.predict.predictor import load_processor
from dfine.processing.input_size import model_input_size, processor_folder
from dfine.processing.processor import DFineImageProcessor


def _processor_at(folder: Path, size: int) -> None:
    processor = DFineImageProcessor()
    processor.size = {"height": size, "width": size}
    processor.save_pretrained(folder)


def test_training_checkpoint_size_wins_and_every_reader_agrees(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": {}, "image_size": [256, 256]}, run / "last.pt")
    _processor_at(run / "best", 320)
    assert model_input_size(run / "last.pt") == (256, 256)
    assert load_processor(run / "last.pt").size == {"height": 256, "width": 256}
    assert model_input_size(run / "best") == (320, 320)
    assert load_processor(run / "best").size == {"height": 320, "width": 320}
    assert load_processor(run / "best", image_size=416).size == {"height": 416, "width": 416}


def test_weights_file_beside_a_processor_config(tmp_path: Path) -> None:
    _processor_at(tmp_path, 480)
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert processor_folder(tmp_path / "model.safetensors") == tmp_path
    assert load_processor(tmp_path / "model.safetensors").size == {"height": 480, "width": 480}


def test_presets_and_unknown_names_use_640() -> None:
    assert processor_folder("dfine-n-coco") is None
    assert model_input_size("dfine-n-coco") == (640, 640)
    assert load_processor("dfine-n-coco").size == {"height": 640, "width": 640}


def test_hub_repository_processor_config_is_used(tmp_path: Path, monkeypatch) -> None:
    # a model trained by dfine and pushed to the hub used to run at 640 with the default processor, whatever its
    # preprocessor_config.json said
    repo = tmp_path / "snapshot"
    DFineImageProcessor(size=(320, 320), do_normalize=True).save_pretrained(repo)
    asked = []

    def fake_download(repo_id, filename, revision=None, **kwargs):
        asked.append((repo_id, filename))
        if repo_id == "someone/no-processor":
            raise FileNotFoundError(f"{repo_id} has no {filename}")
        return str(repo / filename)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    assert processor_folder("someone/dfine-trained") == repo
    assert model_input_size("someone/dfine-trained") == (320, 320)
    processor = load_processor("someone/dfine-trained")
    assert processor.size == {"height": 320, "width": 320} and processor.do_normalize
    assert ("someone/dfine-trained", "preprocessor_config.json") in asked
    assert processor_folder("someone/no-processor") is None
    assert load_processor("someone/no-processor").to_dict() == DFineImageProcessor().to_dict()


def test_a_saved_model_without_a_processor_config_keeps_its_training_size(tmp_path: Path) -> None:
    """save_pretrained of a model trained by dfine writes config.json only: its training size still applies."""
    from dfine.config import DFineConfig

    trained, plain = tmp_path / "trained", tmp_path / "plain"
    config = DFineConfig.from_preset("dfine-n-coco")
    config.training_image_size = (288, 352)
    config.save_pretrained(trained)
    (trained / "model.safetensors").write_bytes(b"")
    assert model_input_size(trained) == (288, 352)
    assert model_input_size(trained / "model.safetensors") == (288, 352)
    assert load_processor(trained).size == {"height": 288, "width": 352}
    DFineConfig.from_preset("dfine-n-coco").save_pretrained(plain)
    assert model_input_size(plain) == (640, 640)
    _processor_at(trained, 320)  # a processor config, when there is one, is what the processor was saved with
    assert model_input_size(trained) == (320, 320)


def test_a_processor_size_the_model_cannot_take_names_the_file(tmp_path: Path) -> None:
    # predict, val, export and benchmark each refused 300x300 later, without saying it came from this file
    import pytest

    from dfine.errors import InputFileError

    _processor_at(tmp_path, 300)
    with pytest.raises(InputFileError, match=r"preprocessor_config\.json: size 300x300 is not a multiple of 32"):
        model_input_size(tmp_path)
    assert load_processor(tmp_path, image_size=320).size == {"height": 320, "width": 320}  # the way around it
    padding = DFineImageProcessor(size={"height": 300, "width": 300}, do_pad=True, pad_size=320)
    padding.save_pretrained(tmp_path)  # padded to a size the model takes: fine
    assert model_input_size(tmp_path) == (300, 300)
