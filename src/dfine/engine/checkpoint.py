"""Training checkpoints: what ``last.pt`` holds, how it is written (atomically) and read (``weights_only``).

A training checkpoint is a ``torch.save`` of a dict made only of tensors, numbers, strings, lists and dicts, so
that it loads with ``torch.load(weights_only=True)`` (no pickled code can run)::

    format       "dfine-train-1"
    epoch        last completed epoch (0-based); a resumed run starts at epoch + 1
    stage        1 before the stop epoch, 2 from it on
    best_metric  best COCO AP so far (-1.0 before any evaluation); best_epoch, best_eval (its metrics dict)
    model        the trained model's state dict (internal names)
    ema          {"module": EMA state dict, "updates": t, "decay": d, "warmups": w}
    optimizer, scheduler, scaler    their state dicts
    config       the model's DFineConfig as a dict (``from_pretrained`` reads it)
    class_names  the data set's class names, label order
    hparams      the resolved Hyperparameters (a resumed run uses them unchanged)
    image_size   [height, width] of training
    rng          per rank: {"python", "numpy", "torch", "cuda"} generator states as tensors and numbers
    extra        small bookkeeping (rollbacks so far, world size, seed, evaluation interval, AMP, data set)

Because ``ema/module`` and ``config`` are there, ``DFineForObjectDetection.from_pretrained("runs/x/last.pt")``
loads the EMA weights directly (see :mod:`dfine.model.resolve`).
"""

from __future__ import annotations

import datetime
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dfine.errors import CheckpointError, InputFileError, first_line
from dfine.hub.readers import torch_load_error
from dfine.utils.files import atomic_write

FORMAT = "dfine-train-1"
LAST_NAME = "last.pt"
BEST_STAGE1_NAME = "best_stage1.pt"
BEST_DIR_NAME = "best"
_REQUIRED = ("model", "ema", "optimizer", "scheduler", "epoch", "config", "hparams")


# ------------------------------------------------------------------------------------------------ random state
def capture_rng_state() -> dict[str, Any]:
    """The state of Python's, NumPy's and torch's (CPU and every CUDA device) global generators.

    Stored as tensors and plain numbers only (``weights_only``-loadable).
    """
    version, words, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    return {
        "python": {"version": int(version), "state": torch.tensor(words, dtype=torch.int64),
                   "gauss": None if gauss is None else float(gauss)},
        "numpy": {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set the global generators to a state from :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(w) for w in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(("MT19937", npy["keys"].numpy().astype(np.uint32), int(npy["pos"]), int(npy["has_gauss"]),
                         float(npy["cached"])))
    torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.to(torch.uint8).cpu() for s in cuda])


# ------------------------------------------------------------------------------------------------ files
def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: a crash mid-write leaves the previous file intact.

    ``format`` and ``date`` are added.
    """
    content = {"format": FORMAT, "date": datetime.datetime.now().isoformat(timespec="seconds"), **state}
    return atomic_write(path, lambda tmp: torch.save(content, tmp))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint with ``torch.load(weights_only=True)`` onto the CPU.

    Raises:
        InputFileError: the file is missing or unreadable.
        CheckpointError: it is not a ``dfine train`` checkpoint (e.g. weights only: fine-tune from it instead).
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "checkpoint not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:  # permissions, I/O errors: the file may well be fine
        raise InputFileError(path, f"cannot be read ({e.strerror or first_line(e)})") from None
    except Exception as e:  # truncated zip, pickle of disallowed objects, ... (torch's advice is never passed on)
        raise torch_load_error(path, e) from None
    missing = [key for key in _REQUIRED if not isinstance(data, dict) or key not in data]
    if missing:
        raise CheckpointError(f"{path}: not a dfine training checkpoint (no {', '.join(missing)}); to start a new run "
                              "from its weights pass it as the model instead of resuming")
    return data


def recover_best_model(directory: str | Path) -> None:
    """Put back the previous ``best/`` when a run was killed between the two renames of :func:`save_best_model`
    (``best/`` moved aside, the new one not yet in place): it is still the best epoch so far."""
    directory = Path(directory)
    old = directory.with_name(f".{directory.name}.old")
    if not directory.exists() and old.is_dir():
        old.rename(directory)


def save_best_model(module: nn.Module, processor: Any, directory: str | Path) -> Path:
    """Write a ``from_pretrained`` folder (``config.json``, ``model.safetensors``, ``preprocessor_config.json``).

    The folder is built next to ``directory`` and swapped in with renames, so readers never see half of it.
    """
    directory = Path(directory)
    staging = directory.with_name(f".{directory.name}.tmp")
    old = directory.with_name(f".{directory.name}.old")
    recover_best_model(directory)
    for leftover in (staging, old):
        shutil.rmtree(leftover, ignore_errors=True)
    module.save_pretrained(staging)  # type: ignore[operator]
    processor.save_pretrained(staging)
    if directory.exists():
        directory.rename(old)
    staging.rename(directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def resume_path(resume: bool | str | Path, output_dir: Path) -> Path | None:
    """The checkpoint a ``resume`` argument names: None for False, ``<output>/last.pt`` for True, else the path."""
    if resume is False or resume is None:
        return None
    if resume is True or str(resume).lower() == "true":
        path = output_dir / LAST_NAME
        if not path.is_file():
            raise InputFileError(path, "nothing to resume: no last.pt in the output folder")
        return path
    return Path(resume)
