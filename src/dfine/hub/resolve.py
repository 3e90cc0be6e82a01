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
from dfine.errors import CheckpointError, InputFileError, first_line
from dfine.hub.convert import absent_detection_heads, is_original_layout, to_internal_names
from dfine.presets import COCO_CLASSES, OBJECTS365_NUM_LABELS, SIZES, is_preset, objects365_id2label, preset_config

logger = logging.getLogger(__name__)

SAFETENSORS_NAME = "model.safetensors"
PYTORCH_NAME = "pytorch_model.bin"
_TORCH_SUFFIXES = {".pth", ".pt", ".bin", ".ckpt"}
# Keyword arguments of from_pretrained that go to huggingface_hub.hf_hub_download (as in transformers).
HUB_OPTIONS = ("revision", "cache_dir", "token", "local_files_only", "force_download")


@dataclass
class ResolvedCheckpoint:
    config: DFineConfig
    state_dict: dict[str, Tensor] | None  # internal names; None for a preset (random initialisation)
    source: str  # what to name in messages


# How torch names the class that ``weights_only`` refused, e.g. "Unsupported global: GLOBAL argparse.Namespace"
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def torch_load_error(path: Path, error: BaseException) -> InputFileError:
    """A one-line error for a file ``torch.load(weights_only=True)`` could not read.

    torch's own message advises re-running with ``weights_only=False``: unsafe advice for a file from the internet,
    and wrong for a corrupt one (its first line is the same for both), so it is never passed on. Only a genuine
    refusal (a well-formed pickle holding classes other than tensors and containers) is told apart.
    """
    refused = _REFUSED_GLOBAL.search(f"{error} {error.__context__ or ''}")
    if refused:
        return InputFileError(path, f"contains objects that cannot be loaded safely ({refused[1]}): only tensors, "
                                    "numbers, strings, lists and dicts are read; if you trust its source, re-save "
                                    "just its weights")
    if isinstance(error, EOFError) and path.is_file() and path.stat().st_size == 0:
        return InputFileError(path, "empty file, not a PyTorch checkpoint")
    return InputFileError(path, "not a PyTorch checkpoint (corrupt or not a checkpoint file)")


def load_torch_file(path: Path) -> dict[str, Any]:
    """The dict saved in a ``.pth``/``.pt``/``.bin`` file, read safely (``weights_only``); one-line errors."""
    try:
        # weights_only: a checkpoint from the internet must not be able to run code when loaded
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except OSError as e:  # permissions, I/O errors: the file may well be fine
        raise InputFileError(path, f"cannot be read ({e.strerror or first_line(e)})") from None
    except Exception as e:  # pickle errors, truncated zip, disallowed globals, text files ...
        raise torch_load_error(path, e) from None
    if not isinstance(data, dict):
        raise InputFileError(path, f"holds a {type(data).__name__}, not a state dict")
    return data


def load_safetensors_file(path: Path) -> dict[str, Tensor]:
    """The tensors of a ``.safetensors`` file; one-line errors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise InputFileError(path, f"not a valid safetensors file ({e})") from None


def _unwrap_weights(data: dict[str, Any], path: Path) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """The model weights inside a .pth dict (EMA preferred) and the config it carries, if any."""
    config = data.get("config") if isinstance(data.get("config"), dict) else None
    ema = data.get("ema")
    if isinstance(ema, dict) and isinstance(ema.get("module"), dict):
        weights = ema["module"]
    elif isinstance(data.get("model"), dict):
        weights = data["model"]
    elif isinstance(data.get("state_dict"), dict):
        weights = data["state_dict"]
    else:
        weights = data
    tensors = {k: v for k, v in weights.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: no tensors found (expected weights under 'model' or 'ema'/'module')")
    return tensors, config


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
    from dfine.model.dfine import DFineForObjectDetection

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
                       ("encoder_ffn_dim", "model.encoder.aifi.0.layers.0.mlp.layers.0.weight")):
        if key in state_dict:
            measured[field] = int(state_dict[key].shape[0])
    use_lab = any(k.startswith("model.backbone.") and ".lab." in k for k in state_dict)
    absent = absent_detection_heads(state_dict)  # a transformers DFineModel file: compare the rest
    best: tuple[int, str, list[str]] | None = None
    for size in SIZES:
        config = preset_config(f"dfine-{size}-coco", **measured)
        config.backbone_config.use_learnable_affine_block = use_lab
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in DFineForObjectDetection(config).state_dict().items()
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
        state_dict, _ = _unwrap_weights(load_torch_file(path / PYTORCH_NAME), path / PYTORCH_NAME)
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
    elif path.suffix in _TORCH_SUFFIXES:
        state_dict, carried_config = _unwrap_weights(load_torch_file(path), path)
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


# Older hub spellings (``ustc-community/dfine_x_coco``) map to the current repository names.
_OLD_HUB_NAME = re.compile(r"^(?P<org>[\w.-]+)/dfine_(?P<size>[nsmlx])_(?P<data>coco|obj365|obj2coco(?:_e25)?)$")
_SIZE_WORDS = {"n": "nano", "s": "small", "m": "medium", "l": "large", "x": "xlarge"}


def _hub_candidates(repo_id: str) -> list[str]:
    candidates = [repo_id]
    match = _OLD_HUB_NAME.match(repo_id)
    if match:
        data = match["data"].replace("_", "-")
        candidates.append(f"{match['org']}/dfine-{_SIZE_WORDS[match['size']]}-{data}")
    return candidates


def download_from_hub(repo_id: str, filename: str, revision: str | None = None, **hub_options: Any) -> Path:
    """Fetch one file of a hub repository (cached by huggingface_hub); a CheckpointError when that fails.

    ``hub_options``: cache_dir, token, local_files_only, force_download, passed to ``hf_hub_download``.
    """
    from huggingface_hub import hf_hub_download

    errors = []
    for candidate in _hub_candidates(repo_id):
        try:
            return Path(hf_hub_download(candidate, filename, revision=revision, **hub_options))
        except Exception as e:  # offline, missing repo or file, auth: all reported the same way
            errors.append(f"{candidate}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''}")
    raise CheckpointError(f"could not fetch {filename} of {repo_id!r} from the Hugging Face hub "
                          f"(offline, or no such repository?) — {errors[-1]}")


def _from_hub(repo_id: str, overrides: dict[str, Any], revision: str | None,
              hub_options: dict[str, Any]) -> ResolvedCheckpoint:
    config_file = download_from_hub(repo_id, CONFIG_NAME, revision, **hub_options)
    try:
        weights = download_from_hub(repo_id, SAFETENSORS_NAME, revision, **hub_options)
        state_dict = load_safetensors_file(weights)
    except CheckpointError:
        weights = download_from_hub(repo_id, PYTORCH_NAME, revision, **hub_options)
        state_dict, _ = _unwrap_weights(load_torch_file(weights), weights)
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
    if path.suffix in _TORCH_SUFFIXES | {".safetensors", ".json"} or text.startswith((".", "/", "~")):
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


def _training_image_size(path: Path) -> tuple[int, int] | None:
    """The ``image_size`` a ``dfine train`` checkpoint (``last.pt``) records, None for any other file."""
    try:
        # mmap: only the pickled structure is read, not the weights (a last.pt also holds the optimizer state)
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip checkpoint, or unreadable: loading the model itself says why
        return None
    size = data.get("image_size") if isinstance(data, dict) else None
    if isinstance(size, list | tuple) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):
        return int(size[0]), int(size[1])
    return None


def processor_folder(name_or_path: str | Path) -> Path | None:
    """The local folder whose ``preprocessor_config.json`` goes with a model: the model's folder, the folder of
    a model file, or for a hub id the hub cache's copy of the repository's file; None when there is none (presets,
    bare files, hub repositories without one)."""
    from dfine.processor import PREPROCESSOR_CONFIG_NAME

    path = Path(name_or_path).expanduser()
    if path.exists():
        for folder in (path, path.parent):
            if folder.is_dir() and (folder / PREPROCESSOR_CONFIG_NAME).is_file():
                return folder
        return None
    text = str(name_or_path)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text) and not is_preset(text):
        # a model pushed from a dfine run carries its input size and normalisation there, as a local folder does
        try:
            return download_from_hub(text, PREPROCESSOR_CONFIG_NAME).parent
        except CheckpointError:  # the repository has none (or it is offline and not cached): the defaults apply
            return None
    return None


def _saved_training_size(path: Path) -> tuple[int, int] | None:
    """The ``training_image_size`` in the ``config.json`` of a local model folder (or beside a weights file): what
    ``save_pretrained`` of a model trained by dfine keeps when no processor config was saved with it."""
    folder = path if path.is_dir() else path.parent if path.is_file() else None
    if folder is None or not (folder / CONFIG_NAME).is_file():
        return None
    try:
        return DFineConfig.from_json_file(folder / CONFIG_NAME).training_image_size
    except Exception:  # an unreadable config is reported by the model load itself, with its file named
        return None


def model_input_size(name_or_path: str | Path) -> tuple[int, int]:
    """The (height, width) a model was made for, which every command uses by default: the training size a
    ``dfine train`` checkpoint (``last.pt``) records, else its :func:`processor_folder`'s
    ``preprocessor_config.json``, else the training size its ``config.json`` records, else 640 (the released
    checkpoints')."""
    from dfine.processor import PREPROCESSOR_CONFIG_NAME, DFineImageProcessor

    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix in _TORCH_SUFFIXES:
        size = _training_image_size(path)
        if size is not None:
            return size
    folder = processor_folder(path)
    if folder is not None:
        processor = DFineImageProcessor.from_pretrained(folder)
        height, width = processor.size["height"], processor.size["width"]
        if not processor.do_pad and (height % 32 or width % 32):
            # every command would refuse the size later (the backbone's stride is 32), naming neither the file
            # the size came from nor the way around it
            raise InputFileError(folder / PREPROCESSOR_CONFIG_NAME,
                                 f"size {height}x{width} is not a multiple of 32, as D-FINE's input must be: "
                                 "correct it, or give an image size (--image-size)")
        return height, width
    return _saved_training_size(path) or (640, 640)
