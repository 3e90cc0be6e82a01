"""dfine: the D-FINE real-time object detector (Peng et al., arXiv 2410.13842) with the Hugging Face API.

Public names are imported lazily (PEP 562), so that light submodules — the onnxruntime-only runtime in
particular — can be imported on machines without PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dfine.utils.lazy import lazy_exports
from dfine.version import __version__

# public name -> module that defines it
_EXPORTS = {
    "DFineConfig": "dfine.config",
    "HGNetV2Config": "dfine.config",
    "DFineError": "dfine.errors",
    "InputFileError": "dfine.errors",
    "CheckpointError": "dfine.errors",
    "ConfigError": "dfine.errors",
    "DatasetError": "dfine.errors",
    "DFineModel": "dfine.model",
    "DFineForObjectDetection": "dfine.model",
    "DFineForInstanceSegmentation": "dfine.model",
    "DFineModelOutput": "dfine.model",
    "DFineObjectDetectionOutput": "dfine.model",
    "DFineInstanceSegmentationOutput": "dfine.model",
    "DFineImageProcessor": "dfine.processing.processor",
    "Predictor": "dfine.predict.predictor",
    "list_presets": "dfine.config.presets",
    "train": "dfine.engine.api",
    "val": "dfine.engine.api",
}

__all__ = sorted([*_EXPORTS, "__version__"])


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)


if TYPE_CHECKING:  # for type checkers and IDEs
    from dfine.config import DFineConfig, HGNetV2Config
    from dfine.config.presets import list_presets
    from dfine.engine.api import train, val
    from dfine.errors import CheckpointError, ConfigError, DatasetError, DFineError, InputFileError
    from dfine.model import (
        DFineForInstanceSegmentation,
        DFineForObjectDetection,
        DFineInstanceSegmentationOutput,
        DFineModel,
        DFineModelOutput,
        DFineObjectDetectionOutput,
    )
    from dfine.predict.predictor import Predictor
    from dfine.processing.processor import DFineImageProcessor
