"""Finding the pictures a user points at: one file, a folder (optionally recursive), or a glob pattern; hidden
files and tool folders skipped; and reading many of them one at a time, reporting unreadable ones instead of stopping.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Iterator
from pathlib import Path

from PIL import Image

from dfine.errors import DFineError, InputFileError
from dfine.imaging.decode import load_image
from dfine.imaging.formats import (
    IMAGE_EXTENSIONS,
    UNREAD_IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    unread_image_problem,
)

_GLOB_CHARS = set("*?[")


def read_images(
    paths: Iterable[str | Path], exif_transpose: bool = True
) -> Iterator[tuple[Path, Image.Image | InputFileError]]:
    """Load images one at a time, handing back the error of a file that cannot be read instead of raising it.

    For callers working through many files (a folder, a glob) that skip an unreadable file and report it rather
    than stop at it; :func:`load_image` raises instead. Only one image is held in memory per step.

    Args:
        paths: the image files, e.g. from :func:`list_images`.
        exif_transpose: as for :func:`load_image`.

    Yields:
        ``(path, image)`` for each path in order, where ``image`` is the RGB image or, for a file that is
        missing, not an image, corrupt or truncated, the :class:`~dfine.errors.InputFileError` naming the path and
        the problem.
    """
    for path in paths:
        path = Path(path)
        try:
            image: Image.Image | InputFileError = load_image(path, exif_transpose)
        except InputFileError as error:
            image = error
        yield path, image


def is_hidden_below(path: Path, folder: Path) -> bool:
    """Whether ``path`` is a hidden file, or inside a hidden folder, below ``folder``: macOS ``._name.jpg`` resource
    forks and tool copies (``.ipynb_checkpoints/``, ``.git/``) carry image extensions but are not images to use.
    Only the part below ``folder`` counts, so images stored inside a hidden folder (``~/.cache/...``) are kept."""
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


def _has_extension(path: Path, extensions: frozenset[str]) -> bool:
    # Hidden files include macOS "._name.jpg" resource forks, which carry an image extension but no image.
    return path.is_file() and path.suffix.lower() in extensions and not path.name.startswith(".")


def folder_images(folder: Path, recursive: bool = True, videos: bool = False,
                  left_out: list[Path] | None = None) -> list[Path]:
    """The picture files in ``folder`` (and its subfolders when ``recursive``), matched by extension
    case-insensitively, hidden files and everything in hidden folders left out (:func:`is_hidden_below`), sorted by
    their path string. Photos of a type dfine does not read (``.heic`` ...:
    :data:`~dfine.imaging.formats.UNREAD_IMAGE_EXTENSIONS`) are appended to ``left_out``, for the caller to name.

    Training's YOLO folders and prediction's folders are both listed here, so they hold the same files.
    """
    extensions = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS if videos else IMAGE_EXTENSIONS
    found = []
    for path in folder.rglob("*") if recursive else folder.iterdir():
        suffix = path.suffix.lower()
        if suffix not in extensions and suffix not in UNREAD_IMAGE_EXTENSIONS:
            continue
        if is_hidden_below(path, folder) or not path.is_file():
            continue
        if suffix in extensions:
            found.append(path)
        elif left_out is not None:
            left_out.append(path)
    return sorted(found, key=str)


def list_images(source: str | Path, recursive: bool = False, videos: bool = False,
                left_out: list[Path] | None = None) -> list[Path]:
    """Expand a user's image argument into a sorted list of image files.

    Args:
        source: one image file (returned as is, whatever its extension), a folder (its image files, matched by
            extension case-insensitively, hidden files skipped), or a glob pattern such as ``"data/*.jpg"`` or
            ``"data/**/*.png"`` (``**`` always recurses; non-image matches are dropped).
        recursive: for a folder, also look into its subfolders.
        videos: also list video files (:data:`dfine.imaging.formats.VIDEO_EXTENSIONS`).
        left_out: photos of a type dfine does not read found in a folder are appended to it (see
            :func:`folder_images`).

    Returns:
        Image (and video) paths, sorted by their path string so runs are reproducible.

    Raises:
        InputFileError: the path does not exist, the folder holds no images, or the pattern matches no images.
    """
    extensions = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS if videos else IMAGE_EXTENSIONS
    kind = "image or video files" if videos else "image files"
    text = str(source)
    if not text.strip():  # Path("") is the working folder, which an unset shell variable did not mean
        raise DFineError(f"the source is an empty string: give an {kind[:-1]}, a folder or a pattern")
    path = Path(source)
    if path.is_file():
        return [path]
    if path.is_dir():
        unread: list[Path] = []
        found = folder_images(path, recursive, videos, unread)
        if left_out is not None:
            left_out += unread
        if not found:
            hint = ""
            if not recursive and any(_has_extension(p, extensions) for p in path.rglob("*")):
                hint = " (its subfolders have some: --recursive / recursive=True lists them)"
            elif unread:
                hint = f" ({len(unread)} left out: {unread_image_problem(unread[0])})"
            listed = ", ".join(sorted(IMAGE_EXTENSIONS))
            if videos:
                listed += "; videos: " + ", ".join(sorted(VIDEO_EXTENSIONS))
            raise InputFileError(path, f"no {kind} ({listed}) in this folder{hint}")
        return found
    if _GLOB_CHARS & set(text):
        matches = [Path(m) for m in glob.glob(text, recursive=True)]
        found = sorted((p for p in matches if _has_extension(p, extensions)), key=str)
        if not found:
            what = f"no {kind} match" if matches else "nothing matches"
            raise InputFileError(text, f"{what} this pattern")
        return found
    raise InputFileError(path, "no such file or folder")
