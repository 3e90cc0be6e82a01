"""dfine: the D-FINE real-time object detector (Peng et al., arXiv 2410.13842) with the Hugging Face API."""

from dfine.config import DFineConfig, HGNetV2Config
from dfine.errors import CheckpointError, ConfigError, DatasetError, DFineError, InputFileError
from dfine.model import DFineForObjectDetection, DFineModel, DFineModelOutput, DFineObjectDetectionOutput
from dfine.presets import list_presets
from dfine.processor import DFineImageProcessor

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DFineConfig",
    "DFineError",
    "DFineForObjectDetection",
    "DFineImageProcessor",
    "DFineModel",
    "DFineModelOutput",
    "DFineObjectDetectionOutput",
    "DatasetError",
    "HGNetV2Config",
    "InputFileError",
    "__version__",
    "list_presets",
]
