"""The image processor's options as ``preprocessor_config.json`` and keyword arguments give them: names checked
with a did-you-mean, flags and sizes converted with one-line errors.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from dfine.errors import ConfigError

# "name" or "owner/name"; anything else that does not exist locally is reported as a missing path.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


OPTION_NAMES = (
    "do_resize", "size", "resample", "do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std",
    "do_pad", "pad_size", "do_convert_annotations", "format",
)  # fmt: skip


ANNOTATION_FORMATS = ("coco_detection", "coco_panoptic")  # transformers' RT-DETR formats; panoptic is refused when used


def check_option_names(options: Mapping[str, Any]) -> None:
    """A ConfigError, with the closest name, for a keyword that is not a processor option."""
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        close = difflib.get_close_matches(unknown[0], OPTION_NAMES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else f" (options: {', '.join(OPTION_NAMES)})"
        raise ConfigError(f"unknown processor option(s): {', '.join(unknown)}{hint}")


def flag_option(value: Any, name: str) -> bool:
    """A true/false option: bool (or the 0/1 some hand-written JSON has); a string such as "no" would read as true,
    so it is refused rather than guessed."""
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def converted_option(convert: Any, value: Any, name: str, expected: str) -> Any:
    """``convert(value)``, or a ConfigError naming the option (a preprocessor_config.json value of a wrong type
    would otherwise surface as a bare ``int()`` / ``float()`` error)."""
    try:
        return convert(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be {expected}, got {value!r}") from None


def parse_size(size: Any, name: str = "size") -> dict[str, int]:
    """Normalise a size option: ``{"height", "width"}``, ``(height, width)`` or an int n meaning n×n."""
    if isinstance(size, Mapping):
        if "height" not in size or "width" not in size:
            raise ConfigError(f"{name} must give 'height' and 'width' (stretch resize), got {dict(size)}")
        height, width = size["height"], size["width"]
    elif isinstance(size, int):
        height = width = size
    elif isinstance(size, Sequence) and len(size) == 2:
        height, width = size
    else:
        raise ConfigError(f"{name} must be {{'height': H, 'width': W}}, (H, W) or an int, got {size!r}")
    height, width = (converted_option(int, value, name, "whole numbers of pixels") for value in (height, width))
    if height <= 0 or width <= 0:
        raise ConfigError(f"{name} must be positive, got height={height}, width={width}")
    return {"height": height, "width": width}
