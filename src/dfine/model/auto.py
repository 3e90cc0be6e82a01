"""The model class a checkpoint or config is for: ``DFineForInstanceSegmentation`` when it has D-FINE-seg's mask
branch (``config.use_mask_head``), else ``DFineForObjectDetection`` (as transformers' Auto classes read a config's
``architectures``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dfine.config import DFineConfig
from dfine.model.detection import DFineForObjectDetection
from dfine.model.segmentation import DFineForInstanceSegmentation

__all__ = ["checkpoint_model_class", "load_model", "model_class_for"]


def model_class_for(config: DFineConfig) -> type[DFineForObjectDetection]:
    """``DFineForInstanceSegmentation`` for a config with the mask head, else ``DFineForObjectDetection``."""
    return DFineForInstanceSegmentation if config.use_mask_head else DFineForObjectDetection


def load_model(name_or_path: str | Path, **kwargs: Any) -> DFineForObjectDetection:
    """``from_pretrained`` of the class the checkpoint is for (:func:`model_class_for` of its config): a D-FINE-seg
    file or a saved segmentation model loads with its masks, anything else as a detector.

    ``kwargs`` go to ``from_pretrained``. The config is read first (a folder's or hub id's ``config.json``; an
    original ``.pt``/``.pth`` file is read for it).
    """
    hub = {k: kwargs[k] for k in ("revision", "cache_dir", "token", "local_files_only", "force_download")
           if kwargs.get(k) is not None}
    return checkpoint_model_class(name_or_path, **hub).from_pretrained(name_or_path, **kwargs)


def checkpoint_model_class(name_or_path: str | Path, **hub: Any) -> type[DFineForObjectDetection]:
    """The class :func:`load_model` loads ``name_or_path`` as, from its config alone (``hub``: ``revision``,
    ``cache_dir``, ``token``, ``local_files_only``, ``force_download``)."""
    from dfine.model.resolve import resolve_config

    return model_class_for(resolve_config(name_or_path, **hub))
