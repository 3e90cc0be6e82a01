"""The D-FINE model family as data: backbone variants, the N/S/M/L/X size table and the per-size training recipe.

Values come from the original repository's configs (``configs/dfine/dfine_hgnetv2_{n,s,m,l,x}_coco.yml``
and ``configs/dfine/include/*.yml``). ``preset_config`` turns a
preset name into a :class:`~dfine.config.DFineConfig`; nothing here builds modules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from dfine.config import DFineConfig, HGNetV2Config
from dfine.errors import ConfigError

# HGNetv2 variants: stem (in, mid, out) and per stage (in, mid, out, blocks, layers per block).
# All variants share downsample (F, T, T, T), light blocks (F, F, T, T) and kernels (3, 3, 5, 5).
_BACKBONES: dict[str, dict[str, Any]] = {
    "B0": {"stem": [3, 16, 16], "stages": [(16, 16, 64, 1, 3), (64, 32, 256, 1, 3), (256, 64, 512, 2, 3),
                                           (512, 128, 1024, 1, 3)]},
    "B1": {"stem": [3, 24, 32], "stages": [(32, 32, 64, 1, 3), (64, 48, 256, 1, 3), (256, 96, 512, 2, 3),
                                           (512, 192, 1024, 1, 3)]},
    "B2": {"stem": [3, 24, 32], "stages": [(32, 32, 96, 1, 4), (96, 64, 384, 1, 4), (384, 128, 768, 3, 4),
                                           (768, 256, 1536, 1, 4)]},
    "B3": {"stem": [3, 24, 32], "stages": [(32, 32, 128, 1, 5), (128, 64, 512, 1, 5), (512, 128, 1024, 3, 5),
                                           (1024, 256, 2048, 1, 5)]},
    "B4": {"stem": [3, 32, 48], "stages": [(48, 48, 128, 1, 6), (128, 96, 512, 1, 6), (512, 192, 1024, 3, 6),
                                           (1024, 384, 2048, 1, 6)]},
    "B5": {"stem": [3, 32, 64], "stages": [(64, 64, 128, 1, 6), (128, 128, 512, 2, 6), (512, 256, 1024, 5, 6),
                                           (1024, 512, 2048, 2, 6)]},
    "B6": {"stem": [3, 48, 96], "stages": [(96, 96, 192, 2, 6), (192, 192, 512, 3, 6), (512, 384, 1024, 6, 6),
                                           (1024, 768, 2048, 3, 6)]},
}


def backbone_config(variant: str, out_indices: list[int], use_lab: bool) -> HGNetV2Config:
    """HGNetv2 configuration for variant ``"B0"`` … ``"B6"`` returning stages ``out_indices`` (stem = 0)."""
    try:
        arch = _BACKBONES[variant.upper()]
    except KeyError:
        raise ConfigError(f"unknown HGNetv2 variant {variant!r}; known: {', '.join(_BACKBONES)}") from None
    stages = arch["stages"]
    return HGNetV2Config(
        embedding_size=arch["stem"][2],
        hidden_sizes=[s[2] for s in stages],
        stem_channels=list(arch["stem"]),
        stage_in_channels=[s[0] for s in stages],
        stage_mid_channels=[s[1] for s in stages],
        stage_out_channels=[s[2] for s in stages],
        stage_num_blocks=[s[3] for s in stages],
        stage_numb_of_layers=[s[4] for s in stages],
        out_indices=list(out_indices),
        use_learnable_affine_block=use_lab,
    )


@dataclass(frozen=True)
class SizeSpec:
    """Architecture of one D-FINE size (original: ``configs/dfine/dfine_hgnetv2_*_coco.yml``)."""

    backbone: str
    use_lab: bool
    out_indices: tuple[int, ...]
    encoder_hidden_dim: int
    encoder_ffn_dim: int
    encode_proj_layers: tuple[int, ...]
    hidden_expansion: float
    depth_mult: float
    d_model: int
    decoder_ffn_dim: int
    decoder_n_points: tuple[int, ...]
    decoder_layers: int
    reg_scale: float


SIZES: dict[str, SizeSpec] = {
    "n": SizeSpec("B0", True, (3, 4), 128, 512, (1,), 0.34, 0.5, 128, 512, (6, 6), 3, 4.0),
    "s": SizeSpec("B0", True, (2, 3, 4), 256, 1024, (2,), 0.5, 0.34, 256, 1024, (3, 6, 3), 3, 4.0),
    "m": SizeSpec("B2", True, (2, 3, 4), 256, 1024, (2,), 1.0, 0.67, 256, 1024, (3, 6, 3), 4, 4.0),
    "l": SizeSpec("B4", False, (2, 3, 4), 256, 1024, (2,), 1.0, 1.0, 256, 1024, (3, 6, 3), 6, 4.0),
    "x": SizeSpec("B5", False, (2, 3, 4), 384, 2048, (2,), 1.0, 1.0, 256, 1024, (3, 6, 3), 6, 8.0),
}
SIZE_NAMES = {"n": "nano", "s": "small", "m": "medium", "l": "large", "x": "xlarge"}
DATASETS = ("coco", "obj365", "obj2coco")

COCO_CLASSES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis",
    "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
]  # fmt: skip

# COCO category ids (1..90 with gaps) of the 80 contiguous labels, for writing COCO results files.
COCO_CATEGORY_IDS = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34,
    35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
    64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
]  # fmt: skip

OBJECTS365_NUM_LABELS = 366  # label = Objects365 category id (1..365); index 0 is unused


@cache
def objects365_id2label() -> dict[int, str]:
    """The 366-way head's labels: Objects365 category id -> name (1..365), and 0 -> "unused".

    The original trains Objects365 with label = category id, so index 0 exists in the head but is never a target.
    """
    text = resources.files("dfine").joinpath("resources/objects365_names.txt").read_text(encoding="utf-8")
    names = [line for line in text.splitlines() if line and not line.startswith("#")]
    if len(names) != OBJECTS365_NUM_LABELS - 1:
        raise RuntimeError(f"objects365_names.txt holds {len(names)} names, expected {OBJECTS365_NUM_LABELS - 1}")
    return {0: "unused"} | dict(enumerate(names, start=1))


def _parse_preset(name: str) -> tuple[str, str]:
    """``"dfine-s-coco"``, ``"dfine_small_coco"``, ``"ustc-community/dfine-small-coco"`` -> ("s", "coco")."""
    key = name.strip().lower().split("/")[-1].replace("_", "-")
    match = re.fullmatch(r"d-?fine-(n|s|m|l|x|nano|small|medium|large|xlarge)(?:-(coco|obj365|obj2coco)(?:-e25)?)?",
                         key)
    if not match:
        raise ConfigError(f"unknown preset {name!r}; presets are {', '.join(list_presets())}")
    size = match.group(1)[0] if match.group(1) != "xlarge" else "x"
    return size, match.group(2) or "coco"


def list_presets() -> list[str]:
    return [f"dfine-{size}-{data}" for size in SIZES for data in ("coco", "obj365")]


def is_preset(name: str) -> bool:
    try:
        _parse_preset(str(name))
    except ConfigError:
        return False
    return True


def preset_config(name: str, **overrides: Any) -> DFineConfig:
    """The :class:`DFineConfig` of a preset; ``overrides`` replace any field (e.g. ``num_labels=5``)."""
    size, dataset = _parse_preset(name)
    spec = SIZES[size]
    backbone = backbone_config(spec.backbone, list(spec.out_indices), spec.use_lab)
    levels = len(spec.out_indices)
    if dataset == "obj365":
        id2label = dict(objects365_id2label())
    else:
        id2label = dict(enumerate(COCO_CLASSES))
    kwargs: dict[str, Any] = {
        "backbone_config": backbone,
        "encoder_in_channels": backbone.out_channels,
        "feat_strides": [2 ** (i + 1) for i in spec.out_indices],
        "encoder_hidden_dim": spec.encoder_hidden_dim,
        "encoder_ffn_dim": spec.encoder_ffn_dim,
        "encode_proj_layers": list(spec.encode_proj_layers),
        "hidden_expansion": spec.hidden_expansion,
        "depth_mult": spec.depth_mult,
        "d_model": spec.d_model,
        "decoder_in_channels": [spec.encoder_hidden_dim] * levels,
        "decoder_ffn_dim": spec.decoder_ffn_dim,
        "num_feature_levels": levels,
        "decoder_n_points": list(spec.decoder_n_points),
        "decoder_layers": spec.decoder_layers,
        "reg_scale": spec.reg_scale,
        "id2label": id2label,
    }
    if "num_labels" in overrides and "id2label" not in overrides:
        kwargs.pop("id2label")
    kwargs.update(overrides)
    return DFineConfig(**kwargs)


def size_of(config: DFineConfig) -> str | None:
    """The size letter whose architecture ``config`` has (ignoring the class count), or None."""
    for size in SIZES:
        ref = preset_config(f"dfine-{size}-coco")
        same = all(
            getattr(config, f) == getattr(ref, f)
            for f in ("encoder_hidden_dim", "d_model", "decoder_layers", "num_feature_levels", "hidden_expansion",
                      "depth_mult", "encoder_ffn_dim")
        )
        if same and config.backbone_config.stage_out_channels == ref.backbone_config.stage_out_channels and (
            config.backbone_config.stage_num_blocks == ref.backbone_config.stage_num_blocks
        ):
            return size
    return None


@dataclass(frozen=True)
class Recipe:
    """The original training recipe of one size (``configs/dfine/dfine_hgnetv2_*_coco.yml`` and
    ``configs/dfine/include/optimizer.yml``), at its reference total batch size."""

    batch_size: int
    lr: float
    backbone_lr: float
    weight_decay: float
    epochs: int
    stop_epoch: int
    base_size_repeat: int | None
    ema_restart_decay: float
    freeze_backbone_norm: bool  # L/X: frozen backbone BN and stem; N/S/M train them
    no_decay_bias: bool  # N/S/M exempt encoder/decoder biases from weight decay too
    warmup_iters: int = 500
    ema_decay: float = 0.9999
    ema_warmups: int = 1000
    clip_max_norm: float = 0.1


RECIPES: dict[str, Recipe] = {
    "n": Recipe(128, 8e-4, 4e-4, 1e-4, 160, 148, None, 0.9999, False, True),
    "s": Recipe(32, 2e-4, 1e-4, 1e-4, 132, 120, 20, 0.9999, False, True),
    "m": Recipe(32, 2e-4, 2e-5, 1e-4, 132, 120, 6, 0.9999, False, True),
    "l": Recipe(32, 2.5e-4, 1.25e-5, 1.25e-4, 80, 72, 4, 0.9999, True, False),
    "x": Recipe(32, 2.5e-4, 2.5e-6, 1.25e-4, 80, 72, 3, 0.9998, True, False),
}
