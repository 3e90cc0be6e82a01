"""Checks of the arguments of the Python API (``dfine.train``, ``dfine.val``, ``Predictor``, the runtime).

The Python API checks its arguments up front, so that a wrong type is one line naming the argument rather than a
TypeError from deep inside (often after a data check or a download). Each check raises a
:class:`~dfine.errors.ConfigError`. Nothing here imports PyTorch, so the torch-free runtime uses the same checks.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any

from dfine.errors import ConfigError


def shown(value: Any) -> str:
    """``value`` as a message shows it: its repr when short, else its type (a module's repr is its whole tree)."""
    text = repr(value)
    return text if len(text) <= 60 and "\n" not in text else f"a {type(value).__name__}"


def _is_integer(value: Any) -> bool:
    # True is an int to Python, not to a user asking for a batch size
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_integer(value: Any, name: str, minimum: int, optional: bool = False) -> int | None:
    """``value`` as an int when it is an integer >= ``minimum`` (or None when ``optional``), else a ConfigError."""
    if value is None and optional:
        return None
    if not _is_integer(value) or value < minimum:
        allowed = f"an integer >= {minimum}" + (" or None" if optional else "")
        raise ConfigError(f"{name} must be {allowed}, got {shown(value)}")
    return int(value)


def check_number(value: Any, name: str, *, low: float, high: float | None = None, low_open: bool = False,
                 optional: bool = False) -> float | None:
    """``value`` as a float when it is a finite number in range (``low < value`` when ``low_open``, else
    ``low <= value``; ``value <= high``), or None when ``optional``; else a ConfigError."""
    if value is None and optional:
        return None
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
          and (value > low if low_open else value >= low) and (high is None or value <= high))
    if not ok:
        if high is not None:
            allowed = f"a number from {low:g} to {high:g}"
        else:
            allowed = "a positive number" if low_open and low == 0 else f"a number >= {low:g}"
        raise ConfigError(f"{name} must be {allowed}" + (" or None" if optional else "") + f", got {shown(value)}")
    return float(value)


def check_flag(value: Any, name: str, optional: bool = False) -> bool | None:
    """``value`` when it is True or False (or None when ``optional``), else a ConfigError: 0/1 or "no" are
    not taken for flags, since "no" would read as true."""
    if isinstance(value, bool) or (value is None and optional):
        return value
    allowed = "True, False or None" if optional else "True or False"
    raise ConfigError(f"{name} must be {allowed}, got {shown(value)}")


def check_path(value: Any, name: str, what: str) -> str | os.PathLike[str]:
    """``value`` when it is a str or path, else a ConfigError saying what ``name`` should be (``what``)."""
    if isinstance(value, str) and not value.strip():
        # Path("") is the working folder: an unset shell variable would quietly read or write everything there
        raise ConfigError(f"{name} is an empty string: give {what}")
    if isinstance(value, str | os.PathLike):
        return value
    raise ConfigError(f"{name} must be {what} (a str or Path), got {shown(value)}")


def check_output_folder(value: Any, name: str = "output") -> Path:
    """``value`` as a folder to write into, checked before any work starts: an existing file, or a path below a
    file, is an InputFileError naming it (nothing is created here)."""
    from dfine.errors import InputFileError
    from dfine.utils.files import blocking_file

    path = Path(check_path(value, name, "a folder")).expanduser()
    if path.is_file():
        raise InputFileError(path, f"is a file: {name} needs a folder")
    if blocking_file(path) is not None:
        raise InputFileError(path, "cannot be created: part of the path is a file, not a folder")
    return path


#: The largest seed training takes (torch's generators are seeded with signed 64-bit integers).
MAX_SEED = 2**63 - 1


def check_seed(seed: Any) -> int:
    """``seed`` when it is an integer from 0 to :data:`MAX_SEED`, else a ConfigError: a bad seed would only fail
    once the data is drawn or the generators are seeded, deep inside a run."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"the seed must be an integer from 0 to 2**63 - 1, got {seed!r}")
    return seed
