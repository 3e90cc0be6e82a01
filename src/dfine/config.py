"""Model configuration, readable and writable as a Hugging Face ``config.json`` (model_type ``d_fine``).

The field names and defaults are those of transformers' ``DFineConfig`` / ``HGNetV2Config`` (SPEC Part A §1), so a
hub ``config.json`` loads here without transformers installed, and ``save_pretrained`` writes one that transformers
loads. Keys of a ``config.json`` that we do not use are kept and written back unchanged, so a round trip loses
nothing; a keyword argument typed by the user that is not a field is an error (a typo must not pass silently).
"""

from __future__ import annotations

import copy
import difflib
import json
import typing
from pathlib import Path
from typing import Any

from dfine.errors import ConfigError, InputFileError

CONFIG_NAME = "config.json"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputFileError(path, f"not valid JSON ({e})") from None
    except OSError as e:  # a folder of that name, no permission to read ...
        raise InputFileError(path, f"cannot be read ({e.strerror or e})") from None
    if not isinstance(data, dict):
        raise InputFileError(path, "expected a JSON object")
    return data


# Keys transformers writes into every config.json (provenance and dtype), accepted as keywords too and kept as they are.
METADATA_KEYS = frozenset({"architectures", "transformers_version", "dtype", "torch_dtype", "_name_or_path"})


def unknown_keyword_error(name: str, known: set[str] | frozenset[str], where: str) -> ConfigError:
    """A one-line ConfigError for a keyword argument ``name`` that is not in ``known``, with a close match."""
    close = difflib.get_close_matches(name, sorted(k for k in known if not k.startswith("_")), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{where} got an unknown keyword argument {name!r}{hint}")


def dtype_name(value: Any) -> Any:
    """``torch.float16`` -> ``"float16"`` (how transformers writes dtypes into config.json); others unchanged."""
    import torch

    return str(value).removeprefix("torch.") if isinstance(value, torch.dtype) else value


def json_safe(value: Any, where: str) -> Any:
    """``value`` with dtypes as names and tuples as lists; a ConfigError naming ``where`` for anything else that JSON
    cannot hold, so that save_pretrained never writes a half file or fails with a TypeError."""
    value = dtype_name(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, str | bool | int | float):
        return value
    raise ConfigError(f"config entry {where} holds a {type(value).__name__} ({value!r}), which config.json cannot "
                      "store")


def type_description(hint: Any) -> str:
    """How an error message names a type hint: ``int`` -> "an integer", ``float | None`` -> "a number or null"."""
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        return f"a list of {len(args)} numbers"
    if type(None) in args:
        return " or ".join(type_description(a) for a in args if a is not type(None)) + " or null"
    return str(hint)


def coerce(hint: Any, value: Any) -> Any:
    """``value`` as the type ``hint`` asks for, or raise ValueError. Integers pass for floats and integral floats
    for integers; booleans never pass for numbers (``True`` is an int to Python, not to a user)."""
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            return tuple(coerce(a, v) for a, v in zip(args, value, strict=True))
    elif type(None) in typing.get_args(hint):
        if value is None:
            return None
        return coerce(next(a for a in typing.get_args(hint) if a is not type(None)), value)
    raise ValueError(value)


_PLURAL_TYPE_NAMES = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}


def typed_field(name: str, value: Any, default: Any, also_list: bool = False) -> Any:
    """``value`` of the field ``name`` converted to the type of its default (a list default: a list of values of
    its first entry's type), or a one-line ConfigError. A wrong type would otherwise fail deep inside the model's
    constructor (``'abc' // 8``). ``also_list``: a number field that may also be a list of such numbers.

    Fields whose default is None are not checked.
    """
    if default is None:
        return value
    if isinstance(default, list | tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        if not default:
            return list(value)
        kind = type(default[0])
        try:
            return [coerce(kind, v) for v in value]
        except ValueError:
            raise ConfigError(f"{name} must be a list of {_PLURAL_TYPE_NAMES[kind]}, got {value!r}") from None
    if also_list and isinstance(value, list | tuple):
        return typed_field(name, value, [default])
    try:
        return coerce(type(default), value)
    except ValueError:
        raise ConfigError(f"{name} must be {type_description(type(default))}, got {value!r}") from None


class _JsonConfig:
    """Shared machinery: known fields with defaults, unknown keys of a file kept in ``extra``."""

    model_type: str = ""
    _defaults: dict[str, Any] = {}
    _other_keywords: frozenset[str] = frozenset()  # accepted besides the fields (derived or structured values)
    _number_or_list: frozenset[str] = frozenset()  # number fields that may also be a list of numbers
    _nullable: frozenset[str] = frozenset()  # fields that may also be None

    def __init__(self, **kwargs: Any) -> None:
        self.check_keywords(kwargs, type(self).__name__)
        for name, default in self._defaults.items():
            value = kwargs.pop(name, copy.deepcopy(default))
            if not (value is None and name in self._nullable):
                value = typed_field(name, value, default, also_list=name in self._number_or_list)
            setattr(self, name, value)
        kwargs.pop("model_type", None)
        # Only metadata keys are left; from_dict adds a file's unknown keys so that a round trip loses nothing.
        self.extra: dict[str, Any] = {k: dtype_name(v) for k, v in kwargs.items()}

    @classmethod
    def keyword_names(cls) -> set[str]:
        """Every keyword argument the constructor accepts."""
        return set(cls._defaults) | set(cls._other_keywords) | METADATA_KEYS | {"model_type"}

    @classmethod
    def check_keywords(cls, kwargs: dict[str, Any] | set[str], where: str, also: set[str] | None = None) -> None:
        """Raise a one-line ConfigError for the first keyword that is neither a config field nor in ``also``."""
        known = cls.keyword_names() | (also or set())
        for name in kwargs:
            if name not in known:
                raise unknown_keyword_error(name, known, where)

    @classmethod
    def _from_file_dict(cls, data: dict[str, Any], **overrides: Any) -> Any:
        """An instance from a file's dict: the keys the constructor accepts go to it (``overrides``, typed by the
        user, on top and checked by it), the file's other keys are kept in ``extra``, not refused."""
        names = cls.keyword_names()
        config = cls(**{**{k: v for k, v in data.items() if k in names}, **overrides})
        config.extra = {**{k: v for k, v in data.items() if k not in names}, **config.extra}
        return config

    def to_dict(self) -> dict[str, Any]:
        out = copy.deepcopy(self.extra)
        for name in self._defaults:
            out[name] = copy.deepcopy(getattr(self, name))
        out["model_type"] = self.model_type
        return out

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()  # type: ignore[union-attr]

    def __repr__(self) -> str:
        # default=repr: a repr must never fail, even for a value that save_pretrained would refuse
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True, default=lambda v: repr(dtype_name(v)))
        return f"{type(self).__name__}({text})"


class HGNetV2Config(_JsonConfig):
    """HGNetv2 backbone configuration (SPEC Part A §1.2). Defaults are the B4 backbone of D-FINE-L."""

    model_type = "hgnet_v2"
    _defaults = {
        "num_channels": 3,
        "embedding_size": 64,
        "depths": [3, 4, 6, 3],
        "hidden_sizes": [256, 512, 1024, 2048],
        "hidden_act": "relu",
        "out_features": ["stage2", "stage3", "stage4"],
        "out_indices": [2, 3, 4],
        "stem_channels": [3, 32, 48],
        "stem_strides": [2, 1, 1, 2, 1],
        "stage_in_channels": [48, 128, 512, 1024],
        "stage_mid_channels": [48, 96, 192, 384],
        "stage_out_channels": [128, 512, 1024, 2048],
        "stage_num_blocks": [1, 1, 3, 1],
        "stage_downsample": [False, True, True, True],
        "stage_downsample_strides": [2, 2, 2, 2],
        "stage_light_block": [False, False, True, True],
        "stage_kernel_size": [3, 3, 5, 5],
        "stage_numb_of_layers": [6, 6, 6, 6],
        "use_learnable_affine_block": False,
        "initializer_range": 0.02,
    }
    _nullable = frozenset({"hidden_act"})  # None: no activation

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if "out_indices" not in kwargs and "out_features" in kwargs:
            self.out_indices = [int(name.replace("stage", "")) for name in self.out_features]
        self.out_features = [f"stage{i}" if i else "stem" for i in self.out_indices]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HGNetV2Config:
        """From a ``backbone_config`` dict of a file: keys we do not know are kept, not refused."""
        return cls._from_file_dict(data)

    @property
    def out_channels(self) -> list[int]:
        """Channels of the returned feature maps (stem = 0, stage s = s)."""
        channels = [self.stem_channels[2]] + list(self.stage_out_channels)
        return [channels[i] for i in self.out_indices]

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.setdefault("stage_names", ["stem"] + [f"stage{i + 1}" for i in range(len(self.stage_in_channels))])
        return out


# Counts and ratios that have a valid range (a zero query count, say, only fails deep inside a forward pass).
FIELD_RANGES: dict[str, tuple[float | None, float | None]] = {
    "num_queries": (1, None), "num_denoising": (0, None), "decoder_layers": (1, None), "encoder_layers": (0, None),
    "decoder_n_points": (1, None), "max_num_bins": (1, None), "label_noise_ratio": (0, 1),
    "box_noise_scale": (0, None), "d_model": (1, None), "encoder_hidden_dim": (1, None),
    "encoder_ffn_dim": (1, None), "decoder_ffn_dim": (1, None), "encoder_attention_heads": (1, None),
    "decoder_attention_heads": (1, None), "num_feature_levels": (1, None),
}

# The activation names the model's layers know (dfine.model.layers.activation), and the fields that name one.
ACTIVATIONS = ("gelu", "relu", "silu", "swish")
ACTIVATION_FIELDS = ("encoder_activation_function", "activation_function", "decoder_activation_function")


def check_activation(name: str, value: str | None) -> None:
    """Raise a ConfigError for an activation name the model's layers do not know (None: no activation)."""
    if value is not None and value.lower() not in ACTIVATIONS:
        raise ConfigError(f"{name} must be one of {', '.join(ACTIVATIONS)}, got {value!r}")


def check_field_range(name: str, value: Any) -> None:
    """Raise a ConfigError when a field of :data:`FIELD_RANGES` is out of its range (a list: any entry)."""
    low, high = FIELD_RANGES.get(name, (None, None))
    for v in value if isinstance(value, list | tuple) else [value]:
        if isinstance(v, int | float) and ((low is not None and v < low) or (high is not None and v > high)):
            bounds = f">= {low}" if high is None else f"from {low} to {high}"
            raise ConfigError(f"{name} must be {bounds}, got {value!r}")


def _mapping(name: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a mapping, got {value!r}")
    return value


def _class_index(where: str, index: Any) -> int:
    """A class index of id2label or label2id (config.json writes id2label's as strings: ``"0"``)."""
    try:
        return coerce(int, int(index) if isinstance(index, str) else index)
    except ValueError:
        raise ConfigError(f"{where} must be class indices 0, 1, ..., got {index!r}") from None


def _backbone_from(backbone: HGNetV2Config | dict[str, Any] | None) -> HGNetV2Config:
    """The backbone config from ``backbone_config`` (a dict's unknown keys are kept, as a file's are)."""
    if backbone is None:
        return HGNetV2Config()
    if isinstance(backbone, dict):
        if backbone.get("model_type", "hgnet_v2") != "hgnet_v2":
            raise ConfigError(f"backbone_config has model_type {backbone['model_type']!r}; D-FINE uses hgnet_v2")
        try:
            return HGNetV2Config.from_dict(backbone)
        except ConfigError as error:  # say which part of the config the field is in
            raise ConfigError(f"backbone_config: {error}") from None
    if not isinstance(backbone, HGNetV2Config):
        raise ConfigError(f"backbone_config must be an HGNetV2Config or a dict, got {type(backbone).__name__}")
    return backbone


_LABEL_KEYS = {"num_labels", "id2label", "label2id"}
# config.json key of DFineConfig.dataset_category_ids (not a transformers field; kept like any unknown key)
DATASET_CATEGORY_IDS = "dataset_category_ids"
# config.json key of DFineConfig.training_image_size
TRAINING_IMAGE_SIZE = "training_image_size"


class DFineConfig(_JsonConfig):
    """D-FINE configuration (SPEC Part A §1.1): field names and defaults of Hugging Face's ``DFineConfig``.

    Build one from a size preset with :meth:`from_preset` (``"dfine-s-coco"``), from a ``config.json`` with
    :meth:`from_pretrained`, or directly with keyword arguments. ``num_labels`` is derived from ``id2label``.
    """

    model_type = "d_fine"
    _defaults = {
        "initializer_range": 0.01,
        "initializer_bias_prior_prob": None,
        "layer_norm_eps": 1e-5,
        "batch_norm_eps": 1e-5,
        "freeze_backbone_batch_norms": True,
        "encoder_hidden_dim": 256,
        "encoder_in_channels": [512, 1024, 2048],
        "feat_strides": [8, 16, 32],
        "encoder_layers": 1,
        "encoder_ffn_dim": 1024,
        "encoder_attention_heads": 8,
        "dropout": 0.0,
        "activation_dropout": 0.0,
        "encode_proj_layers": [2],
        "positional_encoding_temperature": 10000,
        "encoder_activation_function": "gelu",
        "activation_function": "silu",
        "eval_size": None,
        "normalize_before": False,
        "hidden_expansion": 1.0,
        "d_model": 256,
        "num_queries": 300,
        "decoder_in_channels": [256, 256, 256],
        "decoder_ffn_dim": 1024,
        "num_feature_levels": 3,
        "decoder_n_points": 4,
        "decoder_layers": 6,
        "decoder_attention_heads": 8,
        "decoder_activation_function": "relu",
        "attention_dropout": 0.0,
        "num_denoising": 100,
        "label_noise_ratio": 0.5,
        "box_noise_scale": 1.0,
        "learn_initial_query": False,
        "anchor_image_size": None,
        "with_box_refine": True,
        "matcher_alpha": 0.25,
        "matcher_gamma": 2.0,
        "matcher_class_cost": 2.0,
        "matcher_bbox_cost": 5.0,
        "matcher_giou_cost": 2.0,
        "use_focal_loss": True,
        "auxiliary_loss": True,
        "focal_loss_alpha": 0.75,
        "focal_loss_gamma": 2.0,
        "weight_loss_vfl": 1.0,
        "weight_loss_bbox": 5.0,
        "weight_loss_giou": 2.0,
        "weight_loss_fgl": 0.15,
        "weight_loss_ddf": 1.5,
        "eos_coefficient": 1e-4,
        "eval_idx": -1,
        "layer_scale": 1.0,
        "max_num_bins": 32,
        "reg_scale": 4.0,
        "depth_mult": 1.0,
        "top_prob_values": 4,
        "lqe_hidden_dim": 64,
        "lqe_layers": 2,
        "decoder_offset_scale": 0.5,
        "decoder_method": "default",
        "up": 0.5,
        "tie_word_embeddings": True,
        "is_encoder_decoder": True,
    }

    # Structured or derived values, accepted besides the fields of _defaults.
    _other_keywords = frozenset({"backbone_config", "num_labels", "id2label", "label2id", "head_dim"})
    _number_or_list = frozenset({"decoder_n_points"})  # one count per feature level
    _nullable = frozenset(ACTIVATION_FIELDS)  # None: no activation

    def __init__(self, **kwargs: Any) -> None:
        backbone = kwargs.pop("backbone_config", None)
        num_labels = kwargs.pop("num_labels", None)
        id2label = kwargs.pop("id2label", None)
        label2id = kwargs.pop("label2id", None)  # derived from id2label; used only when id2label is not given
        head_dim = kwargs.pop("head_dim", None)
        super().__init__(**kwargs)
        self.backbone_config: HGNetV2Config = _backbone_from(backbone)
        if id2label is None and label2id is not None:
            id2label = {_class_index("label2id values", i): name for name, i in _mapping("label2id", label2id).items()}
        if id2label is not None:
            id2label = _mapping("id2label", id2label)
            self.id2label = {_class_index("id2label keys", k): str(v) for k, v in id2label.items()}
            if num_labels is not None and num_labels != len(self.id2label):
                raise ConfigError(f"num_labels={num_labels} and id2label ({len(self.id2label)} entries) disagree: "
                                  "give one of them, or make them match")
        else:
            self.num_labels = 2 if num_labels is None else num_labels
        self.validate()  # first: head_dim divides by the head count, which may be 0
        self.head_dim = self.d_model // self.decoder_attention_heads
        if head_dim is not None and head_dim != self.head_dim:
            raise ConfigError(f"head_dim={head_dim} disagrees with d_model // decoder_attention_heads = "
                              f"{self.head_dim} (head_dim is derived: set d_model or decoder_attention_heads)")

    # Our models always return output objects (which also index like tuples); transformers code reads these.
    @property
    def return_dict(self) -> bool:
        return True

    @property
    def use_return_dict(self) -> bool:
        return True

    # -- labels -------------------------------------------------------------------------------------------------
    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, value: int) -> None:
        value = typed_field("num_labels", value, 1)
        if value < 1:
            raise ConfigError(f"num_labels must be at least 1, got {value}")
        self.id2label = {i: f"LABEL_{i}" for i in range(value)}

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in self.id2label.items()}

    @property
    def class_names(self) -> list[str]:
        return [self.id2label[i] for i in range(self.num_labels)]

    @property
    def training_image_size(self) -> tuple[int, int] | None:
        """The (height, width) dfine trained this model at, or None; the default input size of ``dfine.val`` and
        ``deploy`` for a model object (a folder's ``preprocessor_config.json`` says the same to the processor).

        Kept in config.json under its own key: transformers' ``eval_size`` would change its forward (it then skips
        the encoder's position embedding).
        """
        size = self.extra.get(TRAINING_IMAGE_SIZE)
        if isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):
            return int(size[0]), int(size[1])
        return None

    @training_image_size.setter
    def training_image_size(self, size: tuple[int, int] | None) -> None:
        if size is None:
            self.extra.pop(TRAINING_IMAGE_SIZE, None)
        else:
            self.extra[TRAINING_IMAGE_SIZE] = [int(size[0]), int(size[1])]

    @property
    def dataset_category_ids(self) -> list[int] | None:
        """The category id each label had in the data set the model was trained on, when those ids were not
        simply 0..C-1 (COCO files usually number from 1, often with gaps); None otherwise.

        Written by training and kept in config.json (transformers ignores the key), so that predictions can be
        matched to the data set's own ids.
        """
        ids = self.extra.get(DATASET_CATEGORY_IDS)
        if isinstance(ids, list) and len(ids) == self.num_labels and all(isinstance(i, int) for i in ids):
            return list(ids)
        return None

    @dataset_category_ids.setter
    def dataset_category_ids(self, ids: list[int] | None) -> None:
        ids = None if ids is None else [int(i) for i in ids]
        if ids is not None and len(ids) != self.num_labels:
            raise ConfigError(f"dataset_category_ids has {len(ids)} entries for {self.num_labels} classes")
        if ids is None or ids == list(range(len(ids))):
            self.extra.pop(DATASET_CATEGORY_IDS, None)  # labels are the ids: nothing to record
        else:
            self.extra[DATASET_CATEGORY_IDS] = ids

    @property
    def num_points_list(self) -> list[int]:
        """Sampling points per feature level of the deformable cross-attention."""
        if isinstance(self.decoder_n_points, list | tuple):
            return [int(n) for n in self.decoder_n_points]
        return [int(self.decoder_n_points)] * self.num_feature_levels

    def validate(self) -> None:
        if sorted(self.id2label) != list(range(len(self.id2label))) or not self.id2label:
            # label i is row i of the class head: a gap or an empty table has no meaning (and class_names fails)
            shown = ", ".join(str(i) for i in sorted(self.id2label)[:8]) or "none"
            raise ConfigError(f"id2label must number the classes 0, 1, ..., N-1 (at least one), got keys {shown}")
        for name in FIELD_RANGES:
            check_field_range(name, getattr(self, name))
        for name in ACTIVATION_FIELDS:
            check_activation(name, getattr(self, name))
        check_activation("backbone_config.hidden_act", self.backbone_config.hidden_act)
        if isinstance(self.decoder_n_points, list | tuple) and len(self.decoder_n_points) != self.num_feature_levels:
            raise ConfigError(
                f"decoder_n_points has {len(self.decoder_n_points)} entries but num_feature_levels is "
                f"{self.num_feature_levels}"
            )
        if self.d_model % self.decoder_attention_heads:
            raise ConfigError(f"d_model={self.d_model} is not divisible by {self.decoder_attention_heads} heads")
        if self.encoder_hidden_dim % self.encoder_attention_heads:
            raise ConfigError(f"encoder_hidden_dim={self.encoder_hidden_dim} is not divisible by the encoder heads")
        if self.decoder_method not in ("default", "discrete"):
            raise ConfigError(f"decoder_method must be 'default' or 'discrete', got {self.decoder_method!r}")
        if len(self.backbone_config.out_indices) != len(self.encoder_in_channels):
            raise ConfigError("backbone out_indices and encoder_in_channels must have the same length")
        if not -self.decoder_layers <= self.eval_idx < self.decoder_layers:
            raise ConfigError(f"eval_idx={self.eval_idx} is outside the {self.decoder_layers} decoder layers")

    # -- serialisation ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["backbone_config"] = self.backbone_config.to_dict()
        out["id2label"] = {str(i): name for i, name in self.id2label.items()}
        out["label2id"] = {name: i for i, name in self.id2label.items()}
        out["head_dim"] = self.head_dim
        out.setdefault("architectures", ["DFineForObjectDetection"])
        return out

    def to_json_string(self) -> str:
        return json.dumps(json_safe(self.to_dict(), ""), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory: str | Path) -> Path:
        """Write ``config.json`` into ``save_directory`` (created if needed); returns its path."""
        from dfine.hub.files import atomic_write_text

        path = Path(save_directory) / CONFIG_NAME
        atomic_write_text(path, self.to_json_string())
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> DFineConfig:
        """From a ``config.json`` dict, whose unknown keys are kept; ``overrides`` (typed by the user) must be
        fields. A ``num_labels`` / ``id2label`` / ``label2id`` override replaces all three of ``data``'s."""
        data = dict(data)
        model_type = data.get("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ConfigError(f"model_type is {model_type!r}, not {cls.model_type!r}: this is not a D-FINE config")
        data.pop("head_dim", None)  # derived
        if _LABEL_KEYS & overrides.keys():
            # the file's class list describes the old head: keeping it would contradict a new num_labels
            data = {k: v for k, v in data.items() if k not in _LABEL_KEYS | {DATASET_CATEGORY_IDS}}
        return cls._from_file_dict(data, **overrides)

    @classmethod
    def from_json_file(cls, path: str | Path, **overrides: Any) -> DFineConfig:
        """Read ``path``; a problem of the file names the file, a problem of ``overrides`` is a ConfigError."""
        data = _read_json(Path(path))
        model_type = data.get("model_type")
        if model_type != cls.model_type:
            raise InputFileError(path, f"model_type is {model_type!r}, not 'd_fine': not a D-FINE config")
        try:
            return cls.from_dict(data, **overrides)
        except ConfigError as e:
            if overrides and _is_valid(cls, data):
                raise  # the file alone is fine: the overrides are to blame
            raise InputFileError(path, str(e)) from None

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **overrides: Any) -> DFineConfig:
        """Read a config from a directory, a ``config.json`` path, a preset name or a hub id."""
        from dfine.hub.resolve import resolve_config

        return resolve_config(name_or_path, **overrides)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> DFineConfig:
        """A size preset such as ``"dfine-s-coco"`` or ``"dfine-x-obj365"`` (see :func:`dfine.presets.list_presets`)."""
        from dfine.presets import preset_config

        return preset_config(name, **overrides)


def _is_valid(cls: type[DFineConfig], data: dict[str, Any]) -> bool:
    """Whether ``data`` alone makes a valid config (to tell a bad file from a bad override)."""
    try:
        cls.from_dict(data)
    except ConfigError:
        return False
    return True
