"""Turn whatever the user passes as a model into a config and a state dict (internal names).

Accepted: a directory with ``config.json`` + ``model.safetensors`` (or ``pytorch_model.bin``); a ``.safetensors``
file; an original D-FINE ``.pth`` (weights under ``"model"`` or ``"ema"/"module"``), whose size and class count are
read off its tensors; a training checkpoint written by ``dfine train``; a preset name (random weights); or a Hugging
Face hub id, fetched with huggingface_hub.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dfine.config import CONFIG_NAME, DFineConfig
from dfine.config.presets import (
    COCO_CLASSES,
    OBJECTS365_NUM_LABELS,
    SIZES,
    is_preset,
    objects365_id2label,
    preset_config,
)
from dfine.errors import CheckpointError, InputFileError
from dfine.hub.convert import MASK_BRANCH, absent_detection_heads, is_original_layout, to_internal_names
from dfine.hub.download import HUB_OPTIONS, download_from_hub
from dfine.hub.readers import (
    PYTORCH_NAME,
    SAFETENSORS_NAME,
    TORCH_SUFFIXES,
    load_safetensors_file,
    load_torch_file,
    unwrap_weights,
)
from dfine.model.network import DFineNetwork

logger = logging.getLogger(__name__)


@dataclass
class ResolvedCheckpoint:
    config: DFineConfig
    state_dict: dict[str, Tensor] | None  # internal names; None for a preset (random initialisation)
    source: str  # what to name in messages


def _check_is_dfine(state_dict: dict[str, Tensor], source: str) -> None:
    # enc_score_head: a transformers DFineModel file has no decoder class heads, but every D-FINE has this one
    heads = ("enc_score_head", "decoder.class_embed", "dec_score_head")
    if not any(head in k for k in state_dict for head in heads) or not any(
            "backbone" in k for k in state_dict):
        example = next(iter(state_dict), "<empty>")
        raise CheckpointError(f"{source}: not a D-FINE checkpoint (no D-FINE decoder/backbone keys; first key is "
                              f"{example!r})")


def _labels_for(num_labels: int) -> dict[int, str]:
    if num_labels == len(COCO_CLASSES):
        return dict(enumerate(COCO_CLASSES))
    if num_labels == OBJECTS365_NUM_LABELS:
        return dict(objects365_id2label())
    return {i: f"LABEL_{i}" for i in range(num_labels)}


def infer_config(state_dict: dict[str, Tensor], source: str) -> DFineConfig:
    """The preset whose parameter names and shapes match ``state_dict`` (internal names), with its class count.

    Raises a CheckpointError naming the closest size and what differs when none matches exactly.
    """
    _check_is_dfine(state_dict, source)
    num_labels = int(state_dict["model.enc_score_head.weight"].shape[0])
    given = {k: tuple(v.shape) for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    # Widths that vary between builds of the same size are read off the tensors rather than assumed: records of
    # original checkpoints disagree on the decoder FFN width (512 vs 1024) and on LAB in the L/X backbones.
    measured: dict[str, Any] = {
        "id2label": _labels_for(num_labels),
        "num_denoising": 100 if "model.denoising_class_embed.weight" in state_dict else 0,
    }
    for field, key in (("decoder_ffn_dim", "model.decoder.layers.0.mlp.layers.0.weight"),
                       ("encoder_ffn_dim", "model.encoder.aifi.0.layers.0.mlp.layers.0.weight"),
                       ("mask_dim", "model.mask_head.layers.2.weight")):
        if key in state_dict:
            measured[field] = int(state_dict[key].shape[0])
    # D-FINE-seg: a mask branch on the detector (its shapes are then checked like every other tensor's)
    measured["use_mask_head"] = any(MASK_BRANCH.match(k) for k in state_dict)
    use_lab = any(k.startswith("model.backbone.") and ".lab." in k for k in state_dict)
    absent = absent_detection_heads(state_dict)  # a transformers DFineModel file: compare the rest
    best: tuple[int, str, list[str]] | None = None
    for size in SIZES:
        config = preset_config(f"dfine-{size}-coco", **measured)
        config.backbone_config.use_learnable_affine_block = use_lab
        with torch.device("meta"):
            # DFineForObjectDetection holds the network as .model and nothing else
            shapes = {f"model.{k}": tuple(v.shape) for k, v in DFineNetwork(config).state_dict().items()}
        expected = {k: shape for k, shape in shapes.items()
                    if not k.endswith("num_batches_tracked") and not (absent and absent.match(k))}
        differences = sorted(set(expected) ^ set(given)) + [k for k in expected.keys() & given.keys()
                                                             if expected[k] != given[k]]
        if not differences:
            if "model.decoder.reg_scale" in state_dict:
                config.reg_scale = float(state_dict["model.decoder.reg_scale"].reshape(-1)[0])
            return config
        if best is None or len(differences) < best[0]:
            best = (len(differences), size, differences)
    assert best is not None
    raise CheckpointError(f"{source}: matches no D-FINE size; closest is {best[1].upper()} with {best[0]} differing "
                          f"keys, e.g. {', '.join(best[2][:3])}")


def _from_directory(path: Path, overrides: dict[str, Any]) -> ResolvedCheckpoint:
    config_path = path / CONFIG_NAME
    # The config first: a directory of some other model is reported as such, not as unreadable weights.
    config = DFineConfig.from_json_file(config_path, **overrides) if config_path.exists() else None
    if (path / SAFETENSORS_NAME).exists():
        state_dict = load_safetensors_file(path / SAFETENSORS_NAME)
    elif (path / PYTORCH_NAME).exists():
        state_dict, _ = unwrap_weights(load_torch_file(path / PYTORCH_NAME), path / PYTORCH_NAME)
    elif (path / "best").is_dir() or (path / "last.pt").is_file():  # a dfine training run folder
        runs = " or ".join(str(path / name) for name in ("best", "last.pt") if (path / name).exists())
        raise InputFileError(path, f"a training run folder, not a model: pass {runs}")
    else:
        raise InputFileError(path, f"no {SAFETENSORS_NAME} or {PYTORCH_NAME} in this directory")
    state_dict = to_internal_names(state_dict)
    _check_is_dfine(state_dict, str(path))
    if config is None:
        config = _with_overrides(infer_config(state_dict, str(path)), overrides)
    return ResolvedCheckpoint(config, state_dict, str(path))


def _with_overrides(config: DFineConfig, overrides: dict[str, Any]) -> DFineConfig:
    return DFineConfig.from_dict(config.to_dict(), **overrides) if overrides else config


def _from_file(path: Path, overrides: dict[str, Any]) -> ResolvedCheckpoint:
    if path.name == CONFIG_NAME or path.suffix == ".json":
        return ResolvedCheckpoint(DFineConfig.from_json_file(path, **overrides), None, str(path))
    carried_config = None
    if path.suffix == ".safetensors":
        state_dict = load_safetensors_file(path)
    elif path.suffix in TORCH_SUFFIXES:
        state_dict, carried_config = unwrap_weights(load_torch_file(path), path)
    else:
        raise InputFileError(path, "unknown checkpoint type (expected .safetensors, .pth, .pt, .bin or a directory)")
    original = is_original_layout(state_dict)
    state_dict = to_internal_names(state_dict)
    _check_is_dfine(state_dict, str(path))
    if carried_config is not None:
        config = DFineConfig.from_dict(carried_config, **overrides)
    elif not original and (path.parent / CONFIG_NAME).exists():
        config = DFineConfig.from_json_file(path.parent / CONFIG_NAME, **overrides)
    else:
        config = _with_overrides(infer_config(state_dict, str(path)), overrides)
    return ResolvedCheckpoint(config, state_dict, str(path))


def _from_hub(repo_id: str, overrides: dict[str, Any], revision: str | None,
              hub_options: dict[str, Any]) -> ResolvedCheckpoint:
    config_file = download_from_hub(repo_id, CONFIG_NAME, revision, **hub_options)
    try:
        weights = download_from_hub(repo_id, SAFETENSORS_NAME, revision, **hub_options)
        state_dict = load_safetensors_file(weights)
    except CheckpointError:
        weights = download_from_hub(repo_id, PYTORCH_NAME, revision, **hub_options)
        state_dict, _ = unwrap_weights(load_torch_file(weights), weights)
    state_dict = to_internal_names(state_dict)
    _check_is_dfine(state_dict, repo_id)
    return ResolvedCheckpoint(DFineConfig.from_json_file(config_file, **overrides), state_dict, repo_id)


def resolve_checkpoint(name_or_path: str | Path, revision: str | None = None,
                       hub_options: dict[str, Any] | None = None, **overrides: Any) -> ResolvedCheckpoint:
    """Config and weights for anything ``from_pretrained`` accepts (see the module docstring).

    ``hub_options`` (cache_dir, token, local_files_only, force_download) apply to hub ids only.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return _from_directory(path, overrides)
    if path.is_file():
        return _from_file(path, overrides)
    text = str(name_or_path)
    if is_preset(text) and "/" not in text:
        return ResolvedCheckpoint(preset_config(text, **overrides), None, f"preset {text}")
    if path.suffix in TORCH_SUFFIXES | {".safetensors", ".json"} or text.startswith((".", "/", "~")):
        raise InputFileError(path, "file not found")
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text):
        return _from_hub(text, overrides, revision, hub_options or {})
    raise CheckpointError(f"{text!r} is not a file, a directory, a preset name or a hub id (owner/name)")


def resolve_config(name_or_path: str | Path, **kwargs: Any) -> DFineConfig:
    """The config of anything ``from_pretrained`` accepts; ``kwargs`` are :data:`HUB_OPTIONS` and config fields."""
    hub = {k: kwargs.pop(k) for k in HUB_OPTIONS if k in kwargs}
    revision = hub.pop("revision", None)
    overrides = kwargs
    DFineConfig.check_keywords(overrides, "DFineConfig.from_pretrained", set(HUB_OPTIONS))
    path = Path(name_or_path).expanduser()
    if path.is_dir() and (path / CONFIG_NAME).exists():
        return DFineConfig.from_json_file(path / CONFIG_NAME, **overrides)
    if path.is_file() and path.suffix == ".json":
        return DFineConfig.from_json_file(path, **overrides)
    if not path.exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", str(name_or_path)) and not is_preset(str(name_or_path)):
        return DFineConfig.from_json_file(download_from_hub(str(name_or_path), CONFIG_NAME, revision, **hub),
                                          **overrides)
    return resolve_checkpoint(name_or_path, revision, hub, **overrides).config
