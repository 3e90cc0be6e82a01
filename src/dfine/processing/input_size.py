"""The input size a model was made for, read off the files that come with it: a training checkpoint's recorded
size, the ``preprocessor_config.json`` beside it (or in its hub repository), the ``config.json`` of a model trained by
dfine, else the released checkpoints' 640.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from dfine.config import CONFIG_NAME, DFineConfig
from dfine.config.image_size import STRIDE, is_input_size
from dfine.config.presets import (
    is_preset,
)
from dfine.errors import CheckpointError, InputFileError
from dfine.hub.download import download_from_hub
from dfine.hub.readers import TORCH_SUFFIXES


def training_checkpoint_size(path: Path) -> tuple[int, int] | None:
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
    from dfine.processing.processor import PREPROCESSOR_CONFIG_NAME

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


def saved_training_size(path: Path) -> tuple[int, int] | None:
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
    from dfine.processing.processor import PREPROCESSOR_CONFIG_NAME, DFineImageProcessor

    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix in TORCH_SUFFIXES:
        size = training_checkpoint_size(path)
        if size is not None:
            return size
    folder = processor_folder(path)
    if folder is not None:
        processor = DFineImageProcessor.from_pretrained(folder)
        height, width = processor.size["height"], processor.size["width"]
        if not processor.do_pad and not is_input_size(height, width):
            # every command would refuse the size later, naming neither the file the size came from nor the way
            # around it
            raise InputFileError(folder / PREPROCESSOR_CONFIG_NAME,
                                 f"size {height}x{width} is not a multiple of {STRIDE}, as D-FINE's input must be: "
                                 "correct it, or give an image size (--image-size)")
        return height, width
    return saved_training_size(path) or (640, 640)
