"""from_pretrained keyword arguments as a Hugging Face user passes them: class-count overrides, loading options
(dtype, device_map, hub options), and one-line errors for everything else."""

from __future__ import annotations

import json
import logging

import pytest
import torch

import dfine
from dfine.errors import ConfigError, InputFileError

LABELS_3 = {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}


# -- class-count overrides ------------------------------------------------------------------------------------------
def test_num_labels_override_gives_generic_names_and_new_heads(saved_nano, caplog) -> None:
    directory, model = saved_nano
    with caplog.at_level(logging.WARNING, logger="dfine"):
        loaded = dfine.DFineForObjectDetection.from_pretrained(directory, num_labels=3)
    assert loaded.config.id2label == LABELS_3
    assert loaded.config.label2id == {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2}
    assert loaded.model.enc_score_head.weight.shape == (3, 128)
    assert loaded.model.decoder.class_embed[0].weight.shape == (3, 128)
    assert loaded.model.denoising_class_embed.weight.shape == (4, 128)
    assert "re-initialised 9 class-sized tensors for 3 classes" in caplog.text
    assert torch.equal(loaded.model.enc_output[0].weight, model.model.enc_output[0].weight)


def test_config_num_labels_override_is_not_blamed_on_the_file(saved_nano) -> None:
    directory, _ = saved_nano
    config = dfine.DFineConfig.from_pretrained(directory, num_labels=3)
    assert config.id2label == LABELS_3 and config.num_labels == 3
    assert dfine.DFineConfig(num_labels=3).id2label == LABELS_3
    assert dfine.DFineConfig(num_labels=3).label2id == {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2}


def test_num_labels_and_id2label_must_agree(saved_nano) -> None:
    directory, _ = saved_nano
    two = {0: "cat", 1: "dog"}
    for load in (dfine.DFineForObjectDetection.from_pretrained, dfine.DFineConfig.from_pretrained):
        with pytest.raises(ConfigError, match=r"^num_labels=3 and id2label \(2 entries\) disagree") as info:
            load(directory, num_labels=3, id2label=two)
        assert not isinstance(info.value, InputFileError)
    config = dfine.DFineConfig.from_pretrained(directory, num_labels=2, id2label=two)
    assert config.class_names == ["cat", "dog"]
    with pytest.raises(ConfigError, match="num_labels=3 and id2label"):
        dfine.DFineConfig(num_labels=3, id2label=two)


def test_a_bad_override_is_a_config_error_and_a_bad_file_names_the_file(saved_nano, tmp_path) -> None:
    directory, _ = saved_nano
    with pytest.raises(ConfigError, match="^num_queries must be >= 1, got 0$") as info:
        dfine.DFineConfig.from_pretrained(directory, num_queries=0)
    assert not isinstance(info.value, InputFileError)
    data = json.loads((directory / "config.json").read_text())
    data["num_queries"] = 0
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(InputFileError, match=r"config\.json: num_queries must be >= 1"):
        dfine.DFineConfig.from_pretrained(tmp_path, num_denoising=10)


def test_num_denoising_zero_reports_a_dropped_embedding(saved_nano, caplog) -> None:
    directory, _ = saved_nano
    with caplog.at_level(logging.WARNING, logger="dfine"):
        dfine.DFineForObjectDetection.from_pretrained(directory, num_denoising=0)
    assert "re-initialised" not in caplog.text
    assert "dropped 1 checkpoint tensors this model has no place for (num_denoising=0): " \
           "model.denoising_class_embed.weight" in caplog.text


# -- unknown keywords --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"foo_bar": 1}, "got an unknown keyword argument 'foo_bar'$"),
    ({"num_querys": 100}, r"unknown keyword argument 'num_querys' \(did you mean 'num_queries'\?\)"),
    ({"torch_dtpye": "float16"}, r"did you mean 'torch_dtype'\?"),
])
def test_unknown_keywords_are_refused(saved_nano, kwargs: dict, message: str) -> None:
    directory, _ = saved_nano
    with pytest.raises(ConfigError, match=message) as info:
        dfine.DFineForObjectDetection.from_pretrained(directory, **kwargs)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("DFineForObjectDetection.from_pretrained got")


def test_config_refuses_unknown_keywords_but_keeps_unknown_file_keys(saved_nano, tmp_path) -> None:
    directory, _ = saved_nano
    with pytest.raises(ConfigError, match=r"DFineConfig got an unknown keyword argument 'num_querys' \(did you mean "):
        dfine.DFineConfig(num_querys=100)
    with pytest.raises(ConfigError, match="unknown keyword argument 'foo_bar'"):
        dfine.DFineConfig.from_pretrained(directory, foo_bar=1)
    with pytest.raises(ConfigError, match="unknown keyword argument 'foo_bar'"):
        dfine.DFineConfig.from_preset("dfine-n-coco", foo_bar=1)
    # what transformers writes (and keys of versions we do not know) is kept through a model round trip
    data = json.loads((directory / "config.json").read_text())
    data.update(transformers_version="5.23.0", torch_dtype="float32", future_option={"a": [1, 2]})
    data["backbone_config"]["layer_type"] = "basic"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "config.json").write_text(json.dumps(data))
    (tmp_path / "in" / "model.safetensors").write_bytes((directory / "model.safetensors").read_bytes())
    dfine.DFineForObjectDetection.from_pretrained(tmp_path / "in").save_pretrained(tmp_path / "out")
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["transformers_version"] == "5.23.0" and written["torch_dtype"] == "float32"
    assert written["future_option"] == {"a": [1, 2]} and written["backbone_config"]["layer_type"] == "basic"
    assert written["model_type"] == "d_fine" and written["architectures"] == ["DFineForObjectDetection"]


def test_head_dim_is_derived_and_checked() -> None:
    assert dfine.DFineConfig(d_model=128, head_dim=16).head_dim == 16
    with pytest.raises(ConfigError, match="head_dim=32 disagrees with d_model // decoder_attention_heads = 16"):
        dfine.DFineConfig(d_model=128, head_dim=32)


def test_return_dict_flags_as_transformers_reads_them() -> None:
    config = dfine.DFineConfig()
    assert config.use_return_dict is True and config.return_dict is True


# -- dtype -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, dtype", [
    ({"torch_dtype": torch.float16}, torch.float16),
    ({"dtype": torch.bfloat16}, torch.bfloat16),
    ({"dtype": "float16"}, torch.float16),
    ({"torch_dtype": "bfloat16"}, torch.bfloat16),
    ({"dtype": "float32"}, torch.float32),
    ({"dtype": "auto"}, torch.float32),
])
def test_dtype_casts_the_model(saved_nano, kwargs: dict, dtype: torch.dtype) -> None:
    directory, model = saved_nano
    loaded = dfine.DFineForObjectDetection.from_pretrained(directory, **kwargs)
    assert {p.dtype for p in loaded.parameters()} == {dtype}
    assert torch.equal(loaded.model.enc_output[0].weight, model.model.enc_output[0].weight.to(dtype))
    assert loaded.config.extra["dtype"] == str(dtype).removeprefix("torch.")  # the config describes the model


def test_half_model_saves_and_auto_restores_its_dtype(saved_nano, tmp_path) -> None:
    directory, _ = saved_nano
    half = dfine.DFineForObjectDetection.from_pretrained(directory, torch_dtype=torch.float16)
    half.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "float16"
    again = dfine.DFineForObjectDetection.from_pretrained(tmp_path, dtype="auto")
    assert {p.dtype for p in again.parameters()} == {torch.float16}
    for name, value in half.state_dict().items():
        assert torch.equal(value, again.state_dict()[name]), name
    # without dtype the model is float32, as in transformers
    assert dfine.DFineForObjectDetection.from_pretrained(tmp_path).model.enc_score_head.weight.dtype == torch.float32


@pytest.mark.parametrize("kwargs, message", [
    ({"dtype": "int8"}, r"^dtype='int8' is not supported"),
    ({"dtype": torch.int64}, r"^dtype=torch\.int64 is not supported"),
    ({"dtype": torch.float16, "torch_dtype": torch.float32}, "disagree: give one of them"),
])
def test_bad_dtypes_are_one_line_errors(saved_nano, kwargs: dict, message: str) -> None:
    directory, _ = saved_nano
    with pytest.raises(ConfigError, match=message):
        dfine.DFineForObjectDetection.from_pretrained(directory, **kwargs)


# -- device_map ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device_map", ["cpu", torch.device("cpu")])
def test_single_device_map_moves_the_model(saved_nano, device_map) -> None:
    directory, _ = saved_nano
    loaded = dfine.DFineForObjectDetection.from_pretrained(directory, device_map=device_map)
    assert {p.device for p in loaded.parameters()} == {torch.device("cpu")}


@pytest.mark.parametrize("device_map", ["auto", "balanced", {"": 0}, {"model.backbone": "cpu"}, 1.5])
def test_multi_device_maps_are_refused(saved_nano, device_map) -> None:
    directory, _ = saved_nano
    with pytest.raises(ConfigError, match=r"^device_map=.* is not supported: give one device") as info:
        dfine.DFineForObjectDetection.from_pretrained(directory, device_map=device_map)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_device_map_without_cuda_is_a_one_line_error(saved_nano) -> None:
    directory, _ = saved_nano
    with pytest.raises(ConfigError, match=r"^device_map='cuda:0', but CUDA is not available on this machine$"):
        dfine.DFineForObjectDetection.from_pretrained(directory, device_map="cuda:0")


# -- hub options and saving ------------------------------------------------------------------------------------
def test_hub_options_reach_huggingface_hub(saved_nano, monkeypatch, tmp_path) -> None:
    directory, _ = saved_nano
    calls = []

    def fake_download(repo_id, filename, **kwargs):
        calls.append((filename, kwargs))
        return str(directory / filename)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    options = {"revision": "v1", "cache_dir": str(tmp_path), "token": "t", "local_files_only": True,
               "force_download": False}
    dfine.DFineForObjectDetection.from_pretrained("someone/dfine-model", **options)
    assert [name for name, _ in calls] == ["config.json", "model.safetensors"]
    assert all(kwargs == options for _, kwargs in calls)
    calls.clear()
    config = dfine.DFineConfig.from_pretrained("someone/dfine-model", revision="v1", token="t")
    assert config.num_labels == 80 and calls == [("config.json", {"revision": "v1", "token": "t"})]


def test_save_pretrained_never_writes_a_non_json_value(saved_nano, tmp_path) -> None:
    directory, _ = saved_nano
    model = dfine.DFineForObjectDetection.from_pretrained(directory)
    model.config.extra["compute_dtype"] = torch.bfloat16  # dtypes are written by name, as transformers does
    model.save_pretrained(tmp_path / "ok")
    assert json.loads((tmp_path / "ok" / "config.json").read_text())["compute_dtype"] == "bfloat16"
    model.config.extra["callback"] = print
    with pytest.raises(ConfigError, match=r"^config entry callback holds a builtin_function_or_method"):
        model.save_pretrained(tmp_path / "bad")
    assert not (tmp_path / "bad").exists()  # refused before any file is written


# -- config= (transformers' way of giving the configuration) ---------------------------------------------------------
def test_config_argument_replaces_the_checkpoint_config(saved_nano) -> None:
    directory, model = saved_nano
    config = dfine.DFineConfig.from_pretrained(directory)
    config.num_queries = 100  # not stored in any tensor: the given config must win over the file's
    loaded = dfine.DFineForObjectDetection.from_pretrained(directory, config=config)
    assert loaded.config.num_queries == 100
    state = loaded.state_dict()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_config_argument_with_other_classes_reinitialises_the_heads(saved_nano, caplog) -> None:
    directory, model = saved_nano
    config = dfine.DFineConfig.from_pretrained(directory, id2label={0: "circle", 1: "square"})  # not COCO classes
    with caplog.at_level(logging.WARNING, logger="dfine"):
        loaded = dfine.DFineForObjectDetection.from_pretrained(directory, config=config)
    assert loaded.config.id2label == {0: "circle", 1: "square"}
    assert loaded.model.enc_score_head.weight.shape[0] == 2
    assert "re-initialised 9 class-sized tensors for 2 classes" in caplog.text
    assert torch.equal(loaded.model.enc_output[0].weight, model.model.enc_output[0].weight)


def test_config_argument_of_another_size_is_a_key_error(saved_nano) -> None:
    directory, _ = saved_nano
    with pytest.raises(dfine.errors.CheckpointError, match="shape"):
        dfine.DFineForObjectDetection.from_pretrained(directory, config=dfine.DFineConfig.from_preset("dfine-s-coco"))


def test_config_argument_must_be_a_dfine_config(saved_nano) -> None:
    directory, _ = saved_nano
    with pytest.raises(ConfigError, match=r"^DFineForObjectDetection.from_pretrained: config must be a DFineConfig, "
                                          r"got dict$"):
        dfine.DFineForObjectDetection.from_pretrained(directory, config={"num_queries": 100})
