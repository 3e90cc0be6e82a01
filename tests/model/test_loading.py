"""Strict loading: every problem is named; another model's checkpoint is refused in one line."""

from __future__ import annotations

import pytest
import torch
import torchvision
from safetensors.torch import save_file

import dfine
from dfine.errors import CheckpointError, DFineError, InputFileError


@pytest.fixture(scope="module")
def saved_nano(tmp_path_factory):
    directory = tmp_path_factory.mktemp("nano")
    model = dfine.DFineForObjectDetection(dfine.DFineConfig.from_preset("dfine-n-coco"))
    model.save_pretrained(directory)
    return directory, model


def test_round_trip_is_exact(saved_nano) -> None:
    directory, model = saved_nano
    loaded = dfine.DFineForObjectDetection.from_pretrained(directory)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert loaded.training is False  # from_pretrained returns an eval-mode model, as transformers does


def test_base_model_loads_from_detection_checkpoint(saved_nano) -> None:
    directory, model = saved_nano
    base = dfine.DFineModel.from_pretrained(directory)
    assert torch.equal(base.enc_score_head.weight, model.model.enc_score_head.weight)


def test_missing_and_wrongly_shaped_keys_are_named(saved_nano, tmp_path) -> None:
    from safetensors.torch import load_file

    directory, _ = saved_nano
    tensors = load_file(str(directory / "model.safetensors"))
    del tensors["model.decoder.query_pos_head.layers.0.weight"]
    tensors["model.enc_output.0.bias"] = torch.zeros(7)
    (tmp_path / "bad").mkdir()
    save_file(tensors, str(tmp_path / "bad" / "model.safetensors"), {"format": "pt"})
    (tmp_path / "bad" / "config.json").write_text((directory / "config.json").read_text())
    with pytest.raises(CheckpointError) as info:
        dfine.DFineForObjectDetection.from_pretrained(tmp_path / "bad")
    message = str(info.value)
    assert "model.decoder.query_pos_head.layers.0.weight" in message
    assert "model.enc_output.0.bias (7,) vs model (128,)" in message
    assert "\n" not in message


def test_checkpoint_of_another_model_is_refused(tmp_path) -> None:
    torch.save({"model": torchvision.models.resnet18().state_dict()}, tmp_path / "resnet.pth")
    with pytest.raises(CheckpointError, match=r"resnet\.pth: not a D-FINE checkpoint") as info:
        dfine.DFineForObjectDetection.from_pretrained(tmp_path / "resnet.pth")
    assert "\n" not in str(info.value)


def test_corrupt_checkpoint_names_the_file(tmp_path) -> None:
    (tmp_path / "broken.pth").write_bytes(b"this is not a zip file")
    with pytest.raises(InputFileError, match=r"broken\.pth: not a PyTorch checkpoint"):
        dfine.DFineForObjectDetection.from_pretrained(tmp_path / "broken.pth")
    (tmp_path / "broken.safetensors").write_bytes(b"\x00\x01")
    with pytest.raises(InputFileError, match=r"broken\.safetensors: not a valid safetensors file"):
        dfine.DFineForObjectDetection.from_pretrained(tmp_path / "broken.safetensors")


def test_pickled_code_is_not_executed(tmp_path) -> None:
    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit('code ran')",))

    torch.save({"model": {"x": Evil()}}, tmp_path / "evil.pth")
    with pytest.raises(InputFileError, match=r"evil\.pth: contains objects that cannot be loaded safely"):
        dfine.DFineForObjectDetection.from_pretrained(tmp_path / "evil.pth")


def test_missing_paths_and_names() -> None:
    with pytest.raises(InputFileError, match="file not found"):
        dfine.DFineForObjectDetection.from_pretrained("./nowhere/model.pth")
    with pytest.raises(DFineError, match="not a file, a directory, a preset name or a hub id"):
        dfine.DFineForObjectDetection.from_pretrained("no such thing")


def test_hub_offline_is_a_clear_error() -> None:
    with pytest.raises(CheckpointError, match="could not fetch config.json of 'ustc-community/dfine-nano-coco'"):
        dfine.DFineForObjectDetection.from_pretrained("ustc-community/dfine-nano-coco")


def test_hub_ids_resolve_through_huggingface_hub(saved_nano, monkeypatch) -> None:
    directory, model = saved_nano
    asked = []

    def fake_download(repo_id, filename, revision=None, **kwargs):
        asked.append((repo_id, filename))
        if repo_id != "ustc-community/dfine-nano-coco":  # the old spelling is not on the hub any more
            raise FileNotFoundError(repo_id)
        return str(directory / filename)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    loaded = dfine.DFineForObjectDetection.from_pretrained("ustc-community/dfine_n_coco")
    assert ("ustc-community/dfine_n_coco", "config.json") in asked
    assert ("ustc-community/dfine-nano-coco", "model.safetensors") in asked
    assert torch.equal(loaded.model.enc_score_head.bias, model.model.enc_score_head.bias)


def test_new_class_list_reinitialises_only_class_sized_tensors(saved_nano, caplog) -> None:
    directory, model = saved_nano
    loaded = dfine.DFineForObjectDetection.from_pretrained(directory, id2label={0: "cat", 1: "dog", 2: "bird"})
    assert loaded.config.class_names == ["cat", "dog", "bird"]
    assert loaded.model.enc_score_head.weight.shape == (3, 128)
    assert loaded.model.denoising_class_embed.weight.shape == (4, 128)
    assert "re-initialised" in caplog.text
    assert torch.equal(loaded.model.enc_output[0].weight, model.model.enc_output[0].weight)
    assert torch.equal(loaded.model.decoder.bbox_embed[2].layers[0].weight, model.model.decoder.bbox_embed[2].layers[0].weight)


def test_num_denoising_zero_drops_the_embedding(saved_nano) -> None:
    directory, _ = saved_nano
    loaded = dfine.DFineForObjectDetection.from_pretrained(directory, num_denoising=0)
    assert not hasattr(loaded.model, "denoising_class_embed")


def test_reg_scale_is_read_from_the_weights(tmp_path) -> None:
    config = dfine.DFineConfig.from_preset("dfine-n-coco")
    model = dfine.DFineForObjectDetection(config)
    with torch.no_grad():
        model.model.decoder.reg_scale.fill_(8.0)
    model.config.reg_scale = 4.0
    model.save_pretrained(tmp_path)
    import json

    data = json.loads((tmp_path / "config.json").read_text())
    assert data["reg_scale"] == 8.0  # written consistent with the weights
    data["reg_scale"] = 4.0  # a hub config that says 4 while the weight says 8 (D-FINE-X on the hub)
    (tmp_path / "config.json").write_text(json.dumps(data))
    loaded = dfine.DFineForObjectDetection.from_pretrained(tmp_path)
    assert loaded.config.reg_scale == 8.0
