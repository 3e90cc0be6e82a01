"""Strict loading: every problem is named; another model's checkpoint is refused in one line."""

from __future__ import annotations

import pytest
import torch
import torchvision
from safetensors.torch import save_file

import dfine
from dfine.errors import CheckpointError, DFineError, InputFileError


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
    message = (r"^ustc-community/dfine-nano-coco: not a local folder, config\.json is not in the hub cache and the hub "
               r"cannot be reached \(offline\?\)")
    with pytest.raises(CheckpointError, match=message):
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
    names = {0: "circle", 1: "square", 2: "triangle"}  # none of them a COCO class
    loaded = dfine.DFineForObjectDetection.from_pretrained(directory, id2label=names)
    assert loaded.config.class_names == ["circle", "square", "triangle"]
    assert loaded.model.enc_score_head.weight.shape == (3, 128)
    assert loaded.model.denoising_class_embed.weight.shape == (4, 128)
    assert "re-initialised" in caplog.text
    assert torch.equal(loaded.model.enc_output[0].weight, model.model.enc_output[0].weight)
    assert torch.equal(loaded.model.decoder.bbox_embed[2].layers[0].weight,
                       model.model.decoder.bbox_embed[2].layers[0].weight)


def test_classes_the_checkpoint_knows_keep_their_rows_by_name(saved_nano, caplog) -> None:
    """id2label naming COCO classes in another order (and one new class): those rows come from the checkpoint."""
    directory, model = saved_nano
    coco = model.config.class_names
    loaded = dfine.DFineForObjectDetection.from_pretrained(directory, id2label={0: "dog", 1: "forklift", 2: "Person"})
    assert "2 of 3 classes start from the checkpoint's class rows of the same name; 1 start fresh: forklift" in (
        caplog.text)
    assert "re-initialised" not in caplog.text
    dog, person = coco.index("dog"), coco.index("person")
    old, new = model.state_dict(), loaded.state_dict()
    for key in ("model.enc_score_head.weight", "model.enc_score_head.bias", "model.decoder.class_embed.2.weight",
                "model.denoising_class_embed.weight"):
        assert torch.equal(new[key][0], old[key][dog]) and torch.equal(new[key][2], old[key][person]), key
    assert torch.equal(new["model.denoising_class_embed.weight"][3], old["model.denoising_class_embed.weight"][80])


def test_a_renamed_class_keeps_every_row_in_place(saved_nano, caplog) -> None:
    directory, model = saved_nano
    names = dict(enumerate(model.config.class_names))
    names[62] = "television"  # COCO's "tv"
    loaded = dfine.DFineForObjectDetection.from_pretrained(directory, id2label=names)
    assert loaded.config.class_names[62] == "television"
    old = model.state_dict()
    assert all(torch.equal(v, old[k]) for k, v in loaded.state_dict().items() if "num_batches" not in k)
    assert "start fresh" not in caplog.text and "re-initialised" not in caplog.text


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


# -- DFineModel folders (no "model." prefix; transformers' have no detection heads) ----------------------------------
@pytest.fixture(scope="module")
def saved_base(saved_nano, tmp_path_factory):
    """Our DFineModel folder, written from the detection model's weights."""
    directory, model = saved_nano
    base_dir = tmp_path_factory.mktemp("base")
    dfine.DFineModel.from_pretrained(directory).save_pretrained(base_dir)
    return base_dir, model


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module, skip: str | None = None) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for name in sa:
        if skip is None or skip not in name:
            assert torch.equal(sa[name], sb[name]), name


@torch.no_grad()
def _detect(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    out = model(torch.rand(1, 3, 320, 320, generator=torch.Generator().manual_seed(1)))
    return out.logits, out.pred_boxes


def test_base_model_folder_round_trips_in_both_classes(saved_base) -> None:
    base_dir, model = saved_base
    from safetensors.torch import load_file

    assert not any(k.startswith("model.") for k in load_file(str(base_dir / "model.safetensors")))
    assert '"DFineModel"' in (base_dir / "config.json").read_text()
    base = dfine.DFineModel.from_pretrained(base_dir)
    _assert_same_state(base, model.model)
    detector = dfine.DFineForObjectDetection.from_pretrained(base_dir)
    _assert_same_state(detector, model)
    for a, b in zip(_detect(detector), _detect(model.eval())):
        assert torch.equal(a, b)


def test_detection_folder_loads_in_the_base_model_exactly(saved_nano) -> None:
    directory, model = saved_nano
    base = dfine.DFineModel.from_pretrained(directory)
    _assert_same_state(base, model.model)
    with torch.no_grad():
        pixels = torch.rand(1, 3, 320, 320)
        assert torch.equal(base(pixels).last_hidden_state, model.model.eval()(pixels).last_hidden_state)


def test_base_model_file_without_config_is_recognised(saved_base, tmp_path) -> None:
    base_dir, model = saved_base
    (tmp_path / "weights.safetensors").write_bytes((base_dir / "model.safetensors").read_bytes())
    detector = dfine.DFineForObjectDetection.from_pretrained(tmp_path / "weights.safetensors")
    assert detector.config.num_labels == 80
    _assert_same_state(detector, model)


def _rewrite(directory, target, edit) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(directory / "model.safetensors"))
    edit(tensors)
    target.mkdir()
    save_file(tensors, str(target / "model.safetensors"), {"format": "pt"})
    (target / "config.json").write_text((directory / "config.json").read_text())


def test_base_model_folder_keeps_strict_key_checking(saved_base, tmp_path) -> None:
    base_dir, _ = saved_base
    _rewrite(base_dir, tmp_path / "extra", lambda t: t.__setitem__("encoder.stray.weight", torch.zeros(2)))
    with pytest.raises(CheckpointError, match=r"1 unexpected keys: model\.encoder\.stray\.weight"):
        dfine.DFineForObjectDetection.from_pretrained(tmp_path / "extra")
    with pytest.raises(CheckpointError, match=r"1 unexpected keys: encoder\.stray\.weight"):
        dfine.DFineModel.from_pretrained(tmp_path / "extra")
    _rewrite(base_dir, tmp_path / "missing", lambda t: t.pop("enc_output.0.bias"))
    with pytest.raises(CheckpointError, match=r"1 missing keys: model\.enc_output\.0\.bias"):
        dfine.DFineForObjectDetection.from_pretrained(tmp_path / "missing")
    # only a file without any detection head is transformers' DFineModel; a partial set is a damaged file
    _rewrite(base_dir, tmp_path / "partial",
             lambda t: [t.pop(k) for k in list(t) if k.startswith("decoder.bbox_embed.")])
    with pytest.raises(CheckpointError, match=r"18 missing keys: decoder\.bbox_embed"):
        dfine.DFineModel.from_pretrained(tmp_path / "partial")


def test_transformers_base_model_folder_loads_in_both_classes(saved_base, tmp_path, caplog) -> None:
    transformers = pytest.importorskip("transformers")
    base_dir, model = saved_base
    theirs = transformers.DFineModel.from_pretrained(base_dir)
    theirs.save_pretrained(tmp_path / "theirs")
    reference = {k: v for k, v in theirs.state_dict().items()}
    assert not any("class_embed" in k and k.startswith("decoder.") for k in reference)  # their DFineModel has none
    for cls, prefix in ((dfine.DFineModel, ""), (dfine.DFineForObjectDetection, "model.")):
        caplog.clear()
        ours = cls.from_pretrained(tmp_path / "theirs")
        state = ours.state_dict()
        for name, value in reference.items():
            if name.endswith("num_batches_tracked") and f"{prefix}{name}" not in state:
                continue
            assert torch.equal(state[f"{prefix}{name}"], value), name
        # every tensor but the heads the file lacks is the file's; those are initialised fresh, and reported
        heads = {f"{prefix}{k}" for k in model.model.state_dict()
                 if k.startswith(("decoder.class_embed.", "decoder.bbox_embed."))}
        assert set(state) - {f"{prefix}{k}" for k in reference} == heads
        assert "initialised 24 detection-head tensors the checkpoint does not have" in caplog.text
