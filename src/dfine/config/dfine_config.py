"""``DFineConfig``: the model configuration, readable and writable as a Hugging Face ``config.json`` (model_type
``d_fine``).

The field names and defaults are those of transformers' ``DFineConfig``, so a hub ``config.json`` loads here without
transformers installed, and ``save_pretrained`` writes one that transformers loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dfine.config.backbone import HGNetV2Config
from dfine.config.fields import (
    ACTIVATION_FIELDS,
    CONFIG_NAME,
    FIELD_RANGES,
    JsonConfig,
    check_activation,
    check_field_range,
    class_index,
    json_safe,
    mapping_field,
    read_json,
    typed_field,
)
from dfine.errors import ConfigError, InputFileError


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
# config.json key of DFineConfig.mal_gamma (not a transformers field; kept like any unknown key)
MAL_GAMMA = "mal_gamma"


class DFineConfig(JsonConfig):
    """D-FINE configuration: field names and defaults of Hugging Face's ``DFineConfig``
    (transformers' ``models/d_fine/configuration_d_fine.py``).

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
        # Instance segmentation (D-FINE-seg): not transformers fields, so config.json holds them only when the mask
        # head is on (see to_dict). mask_dim None means d_model, which is D-FINE-seg's choice for every size.
        "use_mask_head": False,
        "mask_dim": None,
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
            id2label = {class_index("label2id values", i): name
                        for name, i in mapping_field("label2id", label2id).items()}
        if id2label is not None:
            id2label = mapping_field("id2label", id2label)
            self.id2label = {class_index("id2label keys", k): str(v) for k, v in id2label.items()}
            if num_labels is not None and num_labels != len(self.id2label):
                raise ConfigError(f"num_labels={num_labels} and id2label ({len(self.id2label)} entries) disagree: "
                                  "give one of them, or make them match")
        else:
            self.num_labels = 2 if num_labels is None else num_labels
        if self.mask_dim is None:
            self.mask_dim = self.d_model
        self.mask_dim = typed_field("mask_dim", self.mask_dim, 0)
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
    def mal_gamma(self) -> float | None:
        """γ of DEIM's Matchability-Aware Loss, which then replaces VFL as the classification loss; None (the
        default, and every released checkpoint's) trains with VFL.

        ``dfine train --recipe deim`` sets it (DEIM's 1.5); kept in config.json, where transformers ignores it, so
        that a model says how it was trained and a resumed run keeps its loss.
        """
        value = self.extra.get(MAL_GAMMA)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    @mal_gamma.setter
    def mal_gamma(self, gamma: float | None) -> None:
        if gamma is None:
            self.extra.pop(MAL_GAMMA, None)
        elif not isinstance(gamma, int | float) or isinstance(gamma, bool) or gamma < 0:
            raise ConfigError(f"mal_gamma must be a number >= 0 or None, got {gamma!r}")
        else:
            self.extra[MAL_GAMMA] = float(gamma)

    @property
    def mask_low_level_stage(self) -> int | None:
        """The HGNetv2 stage whose stride-8 map the mask branch takes besides the encoder's maps, or None.

        D-FINE-seg's pixel decoder starts from a stride-8 map. When the encoder has no stride-8 level (D-FINE-N), the
        backbone's stage 2 (stride 8: HGNetv2 stage s has stride 2^(s+1)) is returned as well and passed around
        the encoder (``build_model`` and ``DFINE.forward`` in D-FINE-seg 0.6.2's ``dfine_seg/model/dfine.py``).
        """
        if not self.use_mask_head or 8 in self.feat_strides:
            return None
        return 2

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
        if self.use_mask_head:
            self._validate_mask_head()
        if not -self.decoder_layers <= self.eval_idx < self.decoder_layers:
            raise ConfigError(f"eval_idx={self.eval_idx} is outside the {self.decoder_layers} decoder layers")

    def _validate_mask_head(self) -> None:
        if self.mask_dim < 32 or self.mask_dim % 32:
            # the pixel decoder normalises with GroupNorm(32 groups, mask_dim)
            raise ConfigError(f"mask_dim must be a positive multiple of 32, got {self.mask_dim}")
        if sorted(self.feat_strides) != list(self.feat_strides) or min(self.feat_strides) < 8:
            raise ConfigError(f"the mask head needs feat_strides of 8 or more, finest first, got {self.feat_strides}")

    # -- serialisation ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["backbone_config"] = self.backbone_config.to_dict()
        out["id2label"] = {str(i): name for i, name in self.id2label.items()}
        out["label2id"] = {name: i for i, name in self.id2label.items()}
        out["head_dim"] = self.head_dim
        if not self.use_mask_head:  # a detector's config.json stays what transformers writes
            del out["use_mask_head"], out["mask_dim"]
        out.setdefault("architectures",
                       ["DFineForInstanceSegmentation" if self.use_mask_head else "DFineForObjectDetection"])
        return out

    def to_json_string(self) -> str:
        return json.dumps(json_safe(self.to_dict(), ""), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory: str | Path) -> Path:
        """Write ``config.json`` into ``save_directory`` (created if needed); returns its path."""
        from dfine.utils.files import atomic_write_text

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
        data = read_json(Path(path))
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
        from dfine.model.resolve import resolve_config

        return resolve_config(name_or_path, **overrides)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> DFineConfig:
        """A size preset such as ``"dfine-s-coco"`` or ``"dfine-x-obj365"``
        (see :func:`dfine.config.presets.list_presets`)."""
        from dfine.config.presets import preset_config

        return preset_config(name, **overrides)


def _is_valid(cls: type[DFineConfig], data: dict[str, Any]) -> bool:
    """Whether ``data`` alone makes a valid config (to tell a bad file from a bad override)."""
    try:
        cls.from_dict(data)
    except ConfigError:
        return False
    return True
