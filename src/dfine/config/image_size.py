"""The input sizes a model accepts, the one place that decides it for every caller (the Python API, the command
line, the processor's saved size, training, deployment and export): sides that are positive multiples of the
backbone's stride (32), and enough encoder positions for the decoder's queries.

Messages name what the caller calls the value (``image_size`` in Python, ``--image-size`` on the command line).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from dfine.config.dfine_config import DFineConfig
from dfine.errors import ConfigError
from dfine.utils.checks import shown

__all__ = ["STRIDE", "check_image_size", "image_size_hw", "is_input_size", "validate_image_size"]

STRIDE = 32
"""The backbone's output stride: the last feature map is 1/32 of the input, so each side must be a multiple of it
(the hybrid encoder's top-down path then matches the maps' sizes exactly)."""


def _is_integer(value: Any) -> bool:
    # True is an int to Python, not to a user giving a size
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_input_size(height: int, width: int) -> bool:
    """Whether a ``height`` x ``width`` input suits the network: both sides positive multiples of :data:`STRIDE`."""
    return height > 0 and width > 0 and height % STRIDE == 0 and width % STRIDE == 0


def validate_image_size(image_size: Any, name: str = "image_size") -> int | None:
    """A square size given as one integer (``--image-size``, ``Predictor(image_size=...)``), or None.

    Raises:
        ConfigError: anything else than None or an integer that is a positive multiple of 32, naming ``name``.
    """
    if image_size is not None and not (_is_integer(image_size) and is_input_size(image_size, image_size)):
        raise ConfigError(f"{name} must be a positive multiple of {STRIDE}, got {shown(image_size)}")
    return None if image_size is None else int(image_size)


def image_size_hw(size: Any, name: str = "image size") -> tuple[int, int]:
    """Normalise a size to ``(height, width)``: an integer n means n x n, or an ``(H, W)`` pair.

    Raises:
        ConfigError: a size that is not an integer or a pair of them, or whose sides are not positive multiples of
            32; the message names ``name``.
    """
    if isinstance(size, Sequence) and not isinstance(size, str) and len(size) == 2 and all(map(_is_integer, size)):
        height, width = (int(side) for side in size)
        if not is_input_size(height, width):
            raise ConfigError(f"{name} must be positive multiples of {STRIDE}, got {height}x{width}")
        return height, width
    if size is None:
        raise ConfigError(f"{name} must be a positive multiple of {STRIDE}, got None")
    validate_image_size(size, name)
    return int(size), int(size)


def check_image_size(config: DFineConfig, image_size: int | tuple[int, int], *, training: bool = True
                     ) -> None:
    """Raise a ConfigError when ``image_size`` gives fewer encoder tokens than the decoder has queries.

    Query selection takes the top ``num_queries`` of all tokens, so e.g. D-FINE-N (strides 16 and 32) needs at least
    256x256 for its 300 queries. The message names the smallest square size that works and, when ``training``, the
    option that lowers the query count (export, benchmark and evaluation take the trained model's count as it is).
    """
    h, w = image_size_hw(image_size)
    tokens = sum(math.ceil(h / s) * math.ceil(w / s) for s in config.feat_strides)
    if tokens < config.num_queries:
        side = next(n for n in range(STRIDE, 1 << 16, STRIDE)
                    if sum(math.ceil(n / s) ** 2 for s in config.feat_strides) >= config.num_queries)
        fewer = (", or fewer queries (--set num_queries=N on the command line, num_queries=N in Python)"
                 if training else "")
        raise ConfigError(f"image size {h}x{w} gives {tokens} encoder positions, fewer than the model's "
                          f"{config.num_queries} queries: use an image size of at least {side}x{side}{fewer}")
