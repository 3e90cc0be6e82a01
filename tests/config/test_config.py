"""DFineConfig: presets, config.json round trips with transformers, unknown keys kept, clear errors."""

from __future__ import annotations

import json
import re

import pytest

import dfine
from dfine.config.presets import list_presets, preset_config
from dfine.errors import ConfigError, InputFileError


@pytest.mark.parametrize("name", ["dfine-s-coco", "dfine_s_coco", "dfine-small-coco", "ustc-community/dfine-small-coco",
                                  "DFINE-S-COCO"])
def test_preset_spellings(name: str) -> None:
    config = dfine.DFineConfig.from_preset(name)
    assert config.decoder_layers == 3 and config.d_model == 256 and config.num_labels == 80


def test_every_preset_builds_a_valid_config() -> None:
    for name in list_presets():
        config = preset_config(name)
        assert config.num_labels == (366 if "obj365" in name else 80)
    assert preset_config("dfine-x-coco").reg_scale == 8.0


def test_objects365_presets_name_every_category() -> None:
    # label = Objects365 category id; 0 is the unused slot of the 366-way head
    id2label = preset_config("dfine-l-obj365").id2label
    assert len(id2label) == 366 and id2label[0] == "unused"
    assert (id2label[1], id2label[2], id2label[6], id2label[365]) == ("Person", "Sneakers", "Car", "Table Tennis")
    names = list(id2label.values())[1:]
    assert len(set(names)) == 365 and all(name == name.strip() and name for name in names)
    # shared COCO classes sit at their Objects365 ids
    assert id2label[47] == "Bicycle" and id2label[93] == "Dog" and id2label[140] == "Cat"


def test_packaged_files_include_the_objects365_names(tmp_path) -> None:
    import shutil
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    # build from a copy: setuptools leaves a build/ folder beside the pyproject.toml it builds
    root = Path(__file__).resolve().parents[2]
    project = tmp_path / "project"
    shutil.copytree(root / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, project / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(project)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("dfine-*.whl")
    assert "dfine/resources/objects365_names.txt" in zipfile.ZipFile(wheel).namelist()


def test_unknown_preset_is_a_one_line_error() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'dfine-q-coco'") as info:
        dfine.DFineConfig.from_preset("dfine-q-coco")
    assert "\n" not in str(info.value)


def test_overrides_and_num_labels() -> None:
    config = dfine.DFineConfig.from_preset("dfine-n-coco", num_labels=5)
    assert config.num_labels == 5 and config.id2label[4] == "LABEL_4"
    config = dfine.DFineConfig.from_preset("dfine-n-coco", id2label={0: "cat", 1: "dog"})
    assert config.class_names == ["cat", "dog"] and config.label2id == {"cat": 0, "dog": 1}


def test_json_round_trip_keeps_unknown_keys(tmp_path) -> None:
    config = dfine.DFineConfig.from_preset("dfine-m-coco")
    data = config.to_dict()
    data["use_timm_backbone"] = False  # a key written by older transformers versions
    data["backbone_config"]["layer_type"] = "basic"
    (tmp_path / "config.json").write_text(json.dumps(data))
    loaded = dfine.DFineConfig.from_pretrained(tmp_path)
    assert loaded == dfine.DFineConfig.from_dict(data)
    assert loaded.extra["use_timm_backbone"] is False
    assert loaded.backbone_config.extra["layer_type"] == "basic"
    loaded.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["use_timm_backbone"] is False


def test_transformers_reads_our_config_and_we_read_theirs(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    ours = dfine.DFineConfig.from_preset("dfine-n-coco")
    ours.save_pretrained(tmp_path / "ours")
    theirs = transformers.DFineConfig.from_pretrained(tmp_path / "ours")
    assert theirs.decoder_n_points == [6, 6] and theirs.backbone_config.out_indices == [3, 4]
    assert theirs.num_labels == 80 and theirs.id2label[0] == "person"
    theirs.save_pretrained(tmp_path / "theirs")
    back = dfine.DFineConfig.from_pretrained(tmp_path / "theirs")
    for field in ("d_model", "decoder_layers", "encoder_hidden_dim", "hidden_expansion", "depth_mult",
                  "decoder_n_points", "feat_strides", "num_labels"):
        assert getattr(back, field) == getattr(ours, field), field
    assert back.backbone_config.stage_out_channels == ours.backbone_config.stage_out_channels


def test_config_of_another_model_type_names_the_file(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 768}))
    with pytest.raises(InputFileError, match=r"config\.json: model_type is 'bert', not 'd_fine'"):
        dfine.DFineConfig.from_pretrained(tmp_path)


def test_malformed_json_names_the_file(tmp_path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InputFileError, match=r"config\.json: not valid JSON"):
        dfine.DFineConfig.from_pretrained(tmp_path)


def test_inconsistent_values_are_rejected() -> None:
    with pytest.raises(ConfigError, match="decoder_n_points has 2 entries"):
        dfine.DFineConfig.from_preset("dfine-s-coco", decoder_n_points=[3, 3])
    with pytest.raises(ConfigError, match="not divisible"):
        dfine.DFineConfig.from_preset("dfine-s-coco", d_model=250)


@pytest.mark.parametrize("override, message", [
    ({"num_queries": 0}, "num_queries must be >= 1, got 0"),
    ({"label_noise_ratio": 1.5}, "label_noise_ratio must be from 0 to 1"),
    ({"decoder_n_points": [3, 0, 3]}, "decoder_n_points must be >= 1"),
])
def test_out_of_range_counts_are_refused_by_the_config(override: dict, message: str) -> None:
    """Any config (from_pretrained overrides too), not only training's --set, refuses a count that would fail
    deep inside a forward pass."""
    with pytest.raises(ConfigError, match=message):
        dfine.DFineConfig.from_preset("dfine-n-coco", **override)


def test_dataset_category_ids_round_trip_and_follow_the_classes(tmp_path) -> None:
    config = dfine.DFineConfig.from_preset("dfine-n-coco", id2label={0: "cat", 1: "dog"})
    config.dataset_category_ids = [0, 1]  # the labels themselves: nothing worth recording
    assert config.dataset_category_ids is None and "dataset_category_ids" not in config.to_dict()
    config.dataset_category_ids = [3, 17]
    config.save_pretrained(tmp_path)
    loaded = dfine.DFineConfig.from_pretrained(tmp_path)
    assert loaded.dataset_category_ids == [3, 17]
    # a new class list makes the old ids meaningless: they are dropped with it
    assert dfine.DFineConfig.from_pretrained(tmp_path, id2label={0: "a", 1: "b"}).dataset_category_ids is None
    with pytest.raises(ConfigError, match="dataset_category_ids has 3 entries for 2 classes"):
        config.dataset_category_ids = [1, 2, 3]


@pytest.mark.parametrize("field, value, message", [
    ("d_model", "abc", "d_model must be an integer, got 'abc'"),
    ("decoder_layers", 1.5, "decoder_layers must be an integer, got 1.5"),
    ("layer_norm_eps", None, "layer_norm_eps must be a number, got None"),
    ("use_focal_loss", "yes", "use_focal_loss must be true or false"),
    ("feat_strides", 32, "feat_strides must be a list, got 32"),
    ("encoder_in_channels", [128, "x"], "encoder_in_channels must be a list of integers"),
    ("decoder_attention_heads", 0, "decoder_attention_heads must be >= 1, got 0"),
    ("encoder_ffn_dim", -1, "encoder_ffn_dim must be >= 1, got -1"),
    ("activation_function", "mish", "activation_function must be one of gelu, relu, silu, swish, got 'mish'"),
    ("backbone_config", {"depths": "x"}, "backbone_config: depths must be a list, got 'x'"),
    ("id2label", {"first": "cat"}, "id2label keys must be class indices 0, 1, ..., got 'first'"),
    ("id2label", ["cat"], "id2label must be a mapping"),
    ("id2label", {"0": "cat", "2": "dog"}, "id2label must number the classes 0, 1, ..., N-1 (at least one), got "
                                           "keys 0, 2"),
    ("id2label", {}, "id2label must number the classes 0, 1, ..., N-1 (at least one), got keys none"),
])
def test_config_json_values_of_a_wrong_type_name_the_file(tmp_path, field: str, value, message: str) -> None:
    """A value of the wrong type failed deep inside the model's constructor ('abc' // 8: a TypeError), or not at
    all until a forward pass."""
    config = dfine.DFineConfig.from_preset("dfine-n-coco").to_dict()
    config[field] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputFileError, match=rf"config\.json: {re.escape(message)}"):
        dfine.DFineConfig.from_pretrained(tmp_path)


def test_values_of_the_right_kind_are_converted_not_refused() -> None:
    # JSON writers may give 6.0 for 6, or 1 for 1.0: both are the value meant
    config = dfine.DFineConfig.from_preset("dfine-n-coco", decoder_layers=3.0, layer_scale=1)
    assert config.decoder_layers == 3 and isinstance(config.decoder_layers, int)
    assert config.layer_scale == 1.0 and isinstance(config.layer_scale, float)
    assert dfine.DFineConfig.from_preset("dfine-n-coco", activation_function=None).activation_function is None


def test_config_json_that_is_a_folder_names_it(tmp_path) -> None:
    (tmp_path / "config.json").mkdir()
    with pytest.raises(InputFileError, match=r"config\.json: cannot be read"):
        dfine.DFineConfig.from_pretrained(tmp_path)
