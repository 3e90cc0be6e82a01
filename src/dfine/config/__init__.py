"""Configuration: the model's ``config.json`` (:class:`DFineConfig`, :class:`HGNetV2Config`), the size presets and
training recipes (:mod:`dfine.config.presets`), and the input sizes a configuration accepts
(:mod:`dfine.config.image_size`)."""

from dfine.config.backbone import HGNetV2Config
from dfine.config.dfine_config import DFineConfig
from dfine.config.fields import CONFIG_NAME

__all__ = ["CONFIG_NAME", "DFineConfig", "HGNetV2Config"]
