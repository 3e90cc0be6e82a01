"""Reading checkpoint files safely: ``.safetensors``, and ``.pth`` / ``.pt`` / ``.bin`` through
``torch.load(weights_only=True)``; each problem is one line naming the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dfine.errors import CheckpointError, InputFileError, first_line

SAFETENSORS_NAME = "model.safetensors"


PYTORCH_NAME = "pytorch_model.bin"


TORCH_SUFFIXES = {".pth", ".pt", ".bin", ".ckpt"}


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


def unwrap_weights(data: dict[str, Any], path: Path) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
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
