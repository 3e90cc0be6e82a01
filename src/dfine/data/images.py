"""Reading image files for training: cheap header probes for sizes and checks, and full decoding to RGB tensors.

The pixels come from :func:`dfine.imaging.decode.decode_file`, the decoder prediction and the runtime use too (same
colour policy, same file types: :mod:`dfine.imaging.formats`); this module adds what only training needs, the
choice of orientation from the annotated size and the checks of a data set's files.

EXIF orientation: phones store pixels unrotated with an orientation tag. Most annotation tools show (and annotate)
the rotated image, so by default the tag is applied. When an annotation file records the *unrotated* size instead,
the boxes were drawn on the stored pixels and the tag must be ignored; :func:`use_exif_orientation` decides this
from the sizes, both in the data set check and when an image is loaded, so the two always agree.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision import tv_tensors

from dfine.errors import InputFileError
from dfine.imaging.decode import decode_file, ends_with_jpeg_end_marker, exif_orientation

# EXIF orientations 5-8 are transposes or quarter turns: they swap width and height.
_SWAPS_AXES = {5, 6, 7, 8}


@dataclass(frozen=True)
class ImageInfo:
    """What a header read tells about an image file.

    Attributes:
        width, height: the size after applying the EXIF orientation.
        stored_width, stored_height: the size of the pixels as stored.
        orientation: the EXIF orientation tag (1 when absent).
        complete: False for a JPEG that does not end with its end-of-image marker (it is truncated, lacks only the
            marker, or has data after it) and for a TIFF whose pixel data lies beyond the end of the file; only
            decoding it (:func:`check_decodes`) tells what is wrong.
    """

    width: int
    height: int
    stored_width: int
    stored_height: int
    orientation: int
    complete: bool = True


def _header_info(image: Image.Image, complete: bool = True) -> ImageInfo:
    stored_w, stored_h = image.size
    orientation = exif_orientation(image)
    w, h = (stored_h, stored_w) if orientation in _SWAPS_AXES else (stored_w, stored_h)
    return ImageInfo(w, h, stored_w, stored_h, orientation, complete)


def _tiff_data_in_file(image: Image.Image, path: Path) -> bool:
    """Whether every strip or tile of a TIFF's first image ends within the file: a TIFF's header comes first, so a
    cut-off file reads like a good one until its pixels are decoded."""
    tags = image.tag_v2
    size = path.stat().st_size
    for offsets_tag, counts_tag in ((273, 279), (324, 325)):  # StripOffsets/-ByteCounts, TileOffsets/-ByteCounts
        offsets, counts = tags.get(offsets_tag), tags.get(counts_tag)
        if offsets is None or counts is None:
            continue
        offsets = offsets if isinstance(offsets, tuple) else (offsets,)
        counts = counts if isinstance(counts, tuple) else (counts,)
        if any(offset + count > size for offset, count in zip(offsets, counts, strict=False)):
            return False
    return True


def probe_image(path: str | Path, *, verify: bool = False) -> ImageInfo:
    """Read an image's size and orientation from its header without decoding the pixels.

    Args:
        path: the image file.
        verify: also run PIL's structural check (CRCs of PNG chunks) and look for the JPEG end marker.

    Raises:
        InputFileError: the file is missing, not an image, or fails verification.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "is a folder, not an image file" if path.is_dir() else "image file is missing")
    try:
        with Image.open(path) as image:
            complete = not (verify and image.format == "JPEG") or ends_with_jpeg_end_marker(path)
            if verify and image.format == "TIFF":
                complete = _tiff_data_in_file(image, path)
            info = _header_info(image, complete)
            if verify:
                image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputFileError(path, f"unreadable or corrupt image ({e})") from None
    if info.width <= 0 or info.height <= 0:
        raise InputFileError(path, f"image has an empty size {info.width}x{info.height}")
    return info


def probe_images(
    paths: Sequence[Path], *, verify: bool = False, progress: bool = False, desc: str = "reading image headers"
) -> list[ImageInfo | InputFileError]:
    """:func:`probe_image` over many files with a thread pool (header reads wait on the disk, not the CPU).

    Returns:
        One entry per path, in order: the :class:`ImageInfo`, or the error for that file.
    """

    def one(path: Path) -> ImageInfo | InputFileError:
        try:
            return probe_image(path, verify=verify)
        except InputFileError as e:
            return e

    workers = min(16, 4 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(one, paths)
        if progress and len(paths) > 200:
            from tqdm import tqdm

            results = tqdm(results, total=len(paths), desc=desc, unit="img")
        return list(results)


def use_exif_orientation(info: ImageInfo, width: int, height: int) -> bool | None:
    """Whether to apply the EXIF orientation so that the image matches the annotated ``width x height``.

    Returns:
        True when the oriented size matches (the usual case, also when there is no tag), False when only the stored
        size matches (boxes drawn on the unrotated pixels), None when neither matches (the annotations belong to
        another version of the image).
    """
    if (info.width, info.height) == (width, height):
        return True
    if (info.stored_width, info.stored_height) == (width, height):
        return False
    return None


def size_mismatch_message(info: ImageInfo, width: int, height: int, boxes_outside: int = 0) -> str:
    """The problem line for :func:`use_exif_orientation` returning None (``boxes_outside``: how many of the
    image's boxes lie outside the annotated size, which the mismatch explains)."""
    outside = ""
    if boxes_outside:
        outside = f" ({boxes_outside} of its boxes lie outside {width}x{height}, not listed separately)"
    return (
        f"image is {info.width}x{info.height} but the annotations were made for {width}x{height}{outside}; "
        "were the images resized after annotating?"
    )


def note_missing_folder(problems: list[str], image: Path, source: Path) -> bool:
    """When ``image`` is missing because its whole folder is, add one line naming the folder to ``problems`` (once,
    however many of its images ``source`` lists) and return True; otherwise return False and add nothing.

    A wrong ``images:`` path would otherwise name every image of the split as missing.
    """
    if image.exists() or image.parent.is_dir():
        return False
    problem = "is a file, not a folder" if image.parent.exists() else "image folder does not exist"
    line = f"{image.parent}: {problem} (it should hold images listed in {source})"
    if line not in problems:
        problems.append(line)
    return True


def _load(path: Path, width: int | None, height: int | None) -> tuple[tv_tensors.Image, bool]:
    def upright_for_annotations(image: Image.Image) -> bool:
        # the stored image's header: turned only when that is the size the boxes were drawn on
        if width is None or height is None:
            return True
        info = _header_info(image)
        apply = use_exif_orientation(info, width, height)
        if apply is None:
            raise InputFileError(path, size_mismatch_message(info, width, height))
        return apply

    decoded = decode_file(path, upright_for_annotations)
    array = np.array(decoded.image, dtype=np.uint8)  # a writable copy: torch warns about read-only numpy buffers
    return tv_tensors.Image(torch.from_numpy(array).permute(2, 0, 1).contiguous()), decoded.end_marker_missing


def load_image(path: str | Path, width: int | None = None, height: int | None = None) -> tv_tensors.Image:
    """Decode an image to a (3, H, W) uint8 RGB tensor, oriented to match the annotations.

    The pixels are those :func:`dfine.imaging.decode.load_image` gives prediction (its colour policy: grey,
    16-bit, float, palette and RGBA images become RGB, alpha dropped). A JPEG that lacks only its end marker is
    decoded as it is (:func:`check_decodes` reports it).

    Args:
        path: the image file.
        width, height: the size the annotations were made for; None applies the EXIF orientation unconditionally.

    Raises:
        InputFileError: the file is missing or corrupt, or its size matches neither orientation of the annotations.
    """
    return _load(Path(path), width, height)[0]


def check_decodes(path: str | Path, width: int | None = None, height: int | None = None) -> str | None:
    """Decode an image exactly as :func:`load_image` will during training.

    Returns:
        A warning line naming the file when it decodes only thanks to a tolerated defect, else None.

    Raises:
        InputFileError: as :func:`load_image`.
    """
    path = Path(path)
    if _load(path, width, height)[1]:
        return f"{path}: JPEG end marker missing (last bytes of the file lost?), but all image data is there"
    return None
