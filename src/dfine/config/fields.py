"""The machinery of a Hugging Face style ``config.json``: typed fields with defaults, unknown keys of a file kept
and written back, values converted and checked with one-line errors, and JSON-safe output.

Keys of a ``config.json`` that we do not use are kept and written back unchanged, so a round trip loses nothing; a
keyword argument typed by the user that is not a field is an error (a typo must not pass silently).
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


def read_json(path: Path) -> dict[str, Any]:
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


class JsonConfig:
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


def mapping_field(name: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a mapping, got {value!r}")
    return value


def class_index(where: str, index: Any) -> int:
    """A class index of id2label or label2id (config.json writes id2label's as strings: ``"0"``)."""
    try:
        return coerce(int, int(index) if isinstance(index, str) else index)
    except ValueError:
        raise ConfigError(f"{where} must be class indices 0, 1, ..., got {index!r}") from None
