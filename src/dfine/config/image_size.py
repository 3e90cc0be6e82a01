"""The input sizes a configuration accepts: multiples of 32 (the backbone's stride), and enough encoder positions
for the decoder's queries."""

from __future__ import annotations

import math

from dfine.config.dfine_config import DFineConfig
from dfine.errors import ConfigError


def image_size_hw(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """Normalise a training/eval size to ``(height, width)``, both multiples of 32 (the backbone's stride).

    Raises:
        ConfigError: a size that is not positive or not a multiple of 32.
    """
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        raise ConfigError(f"image size {h}x{w} must be positive multiples of 32 (the backbone's stride)")
    return int(h), int(w)


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
        side = next(n for n in range(32, 1 << 16, 32) if sum(math.ceil(n / s) ** 2 for s in config.feat_strides)
                    >= config.num_queries)
        fewer = (", or fewer queries (--set num_queries=N on the command line, num_queries=N in Python)"
                 if training else "")
        raise ConfigError(f"image size {h}x{w} gives {tokens} encoder positions, fewer than the model's "
                          f"{config.num_queries} queries: use an image size of at least {side}x{side}{fewer}")
