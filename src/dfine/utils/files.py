"""Writing files and folders safely.

Atomic writes (a crash or a kill mid-write never leaves a truncated file in place of a good one), and output
folders checked before any work starts.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from dfine.errors import DFineError, InputFileError


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        # mkstemp creates the file readable by its owner only (and writers may replace it): the result must have the
        # permissions any new file gets, as a model folder copied to a server or container is read by another user
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _umask() -> int:
    """The process umask (reading it means setting it: it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def blocking_file(path: Path) -> Path | None:
    """The file standing where a folder above ``path`` would have to be created (``notes.txt`` for
    ``notes.txt/run/x``), or None: such a path cannot be written, and saying so early saves a traceback later."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def prepare_output_dir(output_dir: str | Path) -> Path:
    """Create ``output_dir`` (and its parents) if needed; a DFineError when it cannot be a folder."""
    if isinstance(output_dir, str) and not output_dir.strip():  # Path("") would be the working folder
        raise DFineError("the output folder is an empty string: give a folder")
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise InputFileError(path, "exists and is not a folder: choose another output folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a parent is a file
        raise InputFileError(path, "cannot be created: part of the path is a file, not a folder") from None
    except PermissionError:
        raise InputFileError(path, "cannot be created: permission denied") from None
    return path
