"""Reading image files: cheap header probes for sizes and checks, and full decoding to RGB tensors.

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
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision import tv_tensors

from dfine.errors import InputFileError
from dfine.imaging.decode import decode_image_file, ends_with_jpeg_end_marker

IMAGE_SUFFIXES = (".bmp", ".jpg", ".jpeg", ".jpe", ".jfif", ".mpo", ".png", ".tif", ".tiff", ".webp")
# Photo formats found in data set folders that the loader does not read (HEIC/AVIF/JPEG XL need plug-ins or newer
# Pillow builds, raw files a raw converter): such files are left out of a folder, and said so, never silently.
UNREAD_IMAGE_SUFFIXES = frozenset({".heic", ".heif", ".avif", ".jxl", ".dng", ".cr2", ".cr3", ".nef", ".arw",
                                   ".raw", ".gif", ".pgm", ".ppm", ".pbm", ".pfm", ".jp2"})

# EXIF orientations 5-8 are transposes or quarter turns: they swap width and height.
_SWAPS_AXES = {5, 6, 7, 8}
_EXIF_ORIENTATION_TAG = 0x0112


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


def _orientation(image: Image.Image) -> int:
    # Read from what Image.open already parsed: `getexif()` makes PNG decode all pixels, which a header probe
    # must not do (and which breaks a later `verify()`).
    try:
        if hasattr(image, "tag_v2"):  # TIFF keeps the orientation among its own tags
            value = image.tag_v2.get(_EXIF_ORIENTATION_TAG, 1)
        elif image.info.get("exif"):
            exif = Image.Exif()
            exif.load(image.info["exif"])
            value = exif.get(_EXIF_ORIENTATION_TAG, 1)
        else:
            return 1
    except Exception:  # a broken EXIF block must not make an otherwise fine image unusable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _header_info(image: Image.Image, complete: bool = True) -> ImageInfo:
    stored_w, stored_h = image.size
    orientation = _orientation(image)
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


def _sample_bits(image: Image.Image) -> int | None:
    """Bits per sample as the file states them (TIFF), else None."""
    bits = getattr(image, "tag_v2", {}).get(258)  # BitsPerSample, one value per channel
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    return bits if isinstance(bits, int) else None


def _to_rgb(image: Image.Image, bits: int | None = None) -> Image.Image:
    """RGB of any PIL mode; ``bits``: the file's bits per sample, when it says (a 32-bit integer image opens in the
    same mode "I" as a 16-bit PNG does in older PIL)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # PIL's own conversion clips at 255, turning most of the image white. 16-bit grayscale (PIL may open it as
        # "I"): a fixed 65535 -> 255 scale keeps brightness comparable between images. 32-bit integers have no
        # usual range (2**31 would leave any real image black): the image's own maximum is 255.
        array = np.asarray(image, dtype=np.float64)
        high = array.max()
        if high <= 255:
            scale = 1.0
        elif high <= 65535 and not (image.mode == "I" and bits == 32):
            scale = 255.0 / 65535.0
        else:
            scale = 255.0 / high
        image = Image.fromarray(np.clip(np.rint(array * scale), 0, 255).astype(np.uint8))
    elif image.mode == "F":
        # 32-bit float: PIL clips at 0..255, so the usual 0..1 images came out black. 0..1 is scaled to 0..255,
        # values already in 0..255 are kept, any other range is stretched from its minimum to its maximum.
        array = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
        if low >= 0 and high <= 1:
            array = array * 255.0
        elif low < 0 or high > 255:
            array = (array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)
        image = Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # palette transparency must pass through RGBA to convert cleanly
    return image.convert("RGB")


def _load(path: Path, width: int | None, height: int | None) -> tuple[tv_tensors.Image, bool]:
    try:
        image, end_marker_missing = decode_image_file(path)
        with image:
            info = _header_info(image)
            apply = True if width is None or height is None else use_exif_orientation(info, width, height)
            if apply is None:
                raise InputFileError(path, size_mismatch_message(info, width or 0, height or 0))
            oriented = ImageOps.exif_transpose(image) if apply and info.orientation != 1 else image
            rgb = _to_rgb(oriented, _sample_bits(image))  # the transposed copy has lost the TIFF tags
    except FileNotFoundError:
        raise InputFileError(path, "image file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputFileError(path, f"unreadable or corrupt image ({e})") from None
    array = np.array(rgb, dtype=np.uint8)  # a writable copy: torch warns about read-only numpy buffers
    return tv_tensors.Image(torch.from_numpy(array).permute(2, 0, 1).contiguous()), end_marker_missing


def load_image(path: str | Path, width: int | None = None, height: int | None = None) -> tv_tensors.Image:
    """Decode an image to a (3, H, W) uint8 RGB tensor, oriented to match the annotations.

    Grayscale, 16-bit, palette and RGBA images are converted to RGB (alpha dropped). A JPEG that lacks only its
    end marker is decoded as it is (:func:`check_decodes` reports it).

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
