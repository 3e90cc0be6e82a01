"""Decoding picture files to upright 8-bit RGB: the one decoder that training (:mod:`dfine.data.images`), the image
processor, the predictor and the torch-free runtime share, so that the same file gives the same pixels to all of
them.

Every problem a user can fix (a wrong path, a file that is not an image, a corrupt one) raises an
:class:`~dfine.errors.InputFileError` naming the path, so the command line can print one line instead of a
traceback.

**Orientation.** The EXIF ``Orientation`` tag (:func:`exif_orientation`, read from the header only) is applied to
the pixels, so a phone photo comes out the way viewers show it; training skips it for an image whose annotations
were drawn on the stored pixels (:func:`dfine.data.images.use_exif_orientation`).

**Colour policy** (:func:`to_rgb`, applied to files and to PIL images given in memory alike). The original D-FINE
code reads every picture with ``PIL.Image.open(path).convert("RGB")`` (``src/data/dataset/coco_dataset.py`` and
``tools/inference/torch_inf.py``), which is what the released checkpoints were trained and evaluated on; for 8-bit
pictures the rules below are exactly that conversion, and they depart from it only where it loses the picture:

* ``RGB`` is kept; grey (``L``) and 1-bit (``1``, as 0 and 255) are replicated to three channels;
* palette images (``P``, ``PA``) are expanded through their palette (through RGBA when the palette has a transparent
  entry, which only spares PIL's warning: the colours are the palette's);
* **alpha is dropped, not composited** (``LA``, ``RGBA``, ``PA``): the colour stored under a transparent pixel is
  kept, as ``convert("RGB")`` does;
* CMYK (and YCbCr, LAB, HSV) go through PIL's plain formulas; no ICC profile is applied, here or in the original;
* 16-bit integers (``I;16*``, and ``I`` holding values up to 65535) are scaled by 255/65535 and rounded, a fixed
  scale that keeps brightness comparable between images (PIL clips at 255, which turns most of a 16-bit image
  white); an image whose values all fit in 0..255 is taken as 8-bit data stored wide and kept;
* 32-bit integers (``I`` whose TIFF says 32 bits per sample, or holding values above 65535) have no usual range
  (2**31 as white would leave any real image black): the image's own maximum becomes 255;
* floats (``F``) in [0, 1] are scaled to 0..255 and rounded, so 0.5 is mid grey (PIL truncates, turning the whole
  picture black); floats already in 0..255 are rounded; any other range is stretched from its minimum to its
  maximum; NaN and infinities count as 0.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from dfine.errors import DFineError, InputFileError
from dfine.imaging.download import is_url
from dfine.imaging.formats import is_unread_image, unread_image_problem

_EXIF_ORIENTATION_TAG = 0x0112
# The pixel operation that turns stored pixels upright, per EXIF orientation (2-8; 1 is already upright).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1 to 8; 1 when absent or unreadable) of an opened image, read from its header.

    Read from what ``Image.open`` already parsed: ``getexif()`` makes PNG decode all pixels, which a header probe
    must not do (and which breaks a later ``verify()``). Training's size checks and the decoder read it here, so
    they never disagree about whether an image is turned.
    """
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


def sample_bits(image: Image.Image) -> int | None:
    """Bits per sample as the file states them (TIFF), else None: a 32-bit integer image opens in the same mode
    ``I`` as a 16-bit one."""
    bits = getattr(image, "tag_v2", {}).get(258)  # BitsPerSample, one value per channel
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    return bits if isinstance(bits, int) else None


def _integer_to_8_bits(image: Image.Image, bits: int | None) -> Image.Image:
    array = np.asarray(image, dtype=np.float64)
    high = float(array.max()) if array.size else 0.0
    if high <= 255:
        scale = 1.0
    elif high <= 65535 and not (image.mode == "I" and bits == 32):
        scale = 255.0 / 65535.0
    else:
        scale = 255.0 / high
    return Image.fromarray(np.clip(np.rint(array * scale), 0, 255).astype(np.uint8))


def _float_to_8_bits(image: Image.Image) -> Image.Image:
    array = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if low >= 0 and high <= 1:
        array = array * 255.0
    elif low < 0 or high > 255:
        array = (array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)
    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8))


def to_rgb(image: Image.Image) -> Image.Image:
    """Return ``image`` as an 8-bit RGB PIL image (see the module docstring for the colour policy).

    Args:
        image: any PIL image (a 32-bit TIFF is told from a 16-bit one by its tags: :func:`sample_bits`).

    Returns:
        A new ``RGB`` image of the same size (``image`` itself when it is already RGB).

    Raises:
        DFineError: the colour mode cannot be converted to RGB.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "I" or mode in _SIXTEEN_BIT_MODES:
        image = _integer_to_8_bits(image, sample_bits(image))
    elif mode == "F":
        image = _float_to_8_bits(image)
    elif mode == "P" and "transparency" in image.info:
        # Going through RGBA avoids PIL's warning about byte transparency; the RGB values are the palette's.
        image = image.convert("RGBA")
    try:
        return image.convert("RGB")
    except ValueError:
        try:
            return image.convert("RGBA").convert("RGB")
        except ValueError as error:
            raise DFineError(f"cannot convert an image in colour mode {mode!r} to RGB") from error


def upright(image: Image.Image, orientation: int) -> Image.Image:
    """``image`` turned as EXIF ``orientation`` (:func:`exif_orientation`) says; ``image`` itself for 1."""
    method = _UPRIGHT.get(orientation)
    return image if method is None else image.transpose(method)


_END_MARKER = b"\xff\xd9"


# One bits (0xFF would start a marker), the opposite of libjpeg's zero padding: see _decode_without_end_marker.
_FILLER = b"\xfe" * 16


def ends_with_jpeg_end_marker(path: Path) -> bool:
    # A JPEG ends with the EOI marker FF D9; a missing one is the usual sign of an interrupted copy or download.
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(size - 2, 0))
        return f.read(2) == _END_MARKER


def _decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _decode_without_end_marker(path: Path) -> Image.Image:
    """Decode a JPEG that stops without its end marker, or raise if image data is missing too.

    This is what PIL does under ``ImageFile.LOAD_TRUNCATED_IMAGES`` (it supplies the marker), but for this image
    only: that flag is a module global, and images are probed and decoded from several threads.
    """
    data = path.read_bytes().rstrip(b"\xff")  # a lone 0xFF at the end is the first half of the missing marker
    image = _decoded(data + _END_MARKER)
    # libjpeg pads a scan that stops early with zero bits, so a really truncated file decodes without an error too.
    # Decoding again with one bits before the marker tells them apart: when image data is missing, they are decoded
    # as image data and change pixels; when it is all there, they are skipped as junk before the marker. (A
    # progressive JPEG cut exactly between two scans still passes: it decodes, with less detail.)
    try:
        complete = _decoded(data + _FILLER + _END_MARKER).tobytes() == image.tobytes()
    except OSError:
        complete = False
    if not complete:
        raise InputFileError(
            path, "unreadable or corrupt image (truncated: the JPEG data stops before the end of the image)"
        )
    return image


def _open_decoded(path: Path) -> tuple[Image.Image, bool]:
    """The fully decoded image as stored (close it, or use it in a ``with``), and whether it is a JPEG that lacks
    only its end marker (accepted: all image data is there). Raises PIL's errors for anything else."""
    with Image.open(path) as image:
        try:
            image.load()
            return image, False
        except OSError:
            # Data after the end marker decodes normally; a JPEG that fails and does not end with the marker may
            # lack only the marker (all pixels present): common after a copy that lost the last bytes.
            if image.format != "JPEG" or ends_with_jpeg_end_marker(path):
                raise
    return _decode_without_end_marker(path), True


#: Whether to turn a file's pixels upright: a flag, or a function of the opened (stored) image that decides, as
#: training does from the annotated size.
ExifChoice = bool | Callable[[Image.Image], bool]


@dataclass(frozen=True)
class DecodedFile:
    """A picture file decoded by :func:`decode_file`.

    Attributes:
        image: the 8-bit ``RGB`` image, fully loaded (the file is closed).
        end_marker_missing: the file is a JPEG that lacks only its end marker (all image data is there).
    """

    image: Image.Image
    end_marker_missing: bool


def _decode(path: Path, exif_transpose: ExifChoice) -> DecodedFile:
    opened, end_marker_missing = _open_decoded(path)
    with opened:
        turn = exif_transpose(opened) if callable(exif_transpose) else exif_transpose
        orientation = exif_orientation(opened) if turn else 1
        # the colour rules first, on the image as opened: a turned copy has lost the TIFF tags they read
        rgb = to_rgb(opened)
        rgb = upright(rgb, orientation)
        # never hand out the object tied to the (now closing) file
        return DecodedFile(rgb.copy() if rgb is opened else rgb, end_marker_missing)


def decode_file(path: str | Path, exif_transpose: ExifChoice = True) -> DecodedFile:
    """Decode an image file to upright 8-bit RGB: the decoder every reader of dfine uses.

    Args:
        path: the image file.
        exif_transpose: turn the pixels as the EXIF ``Orientation`` tag says (:func:`exif_orientation`), so the
            image looks the way viewers show it; or a function of the opened, stored image that decides (it may
            raise an :class:`~dfine.errors.InputFileError`, which is passed on). Data loaders whose annotations
            were drawn on the stored pixel grid decide False.

    Returns:
        The image (the first frame of a multi-frame file: GIF, TIFF, MPO) and whether its JPEG end marker is
        missing.

    Raises:
        InputFileError: the file is missing, is a folder, cannot be read, is not an image (or of a type dfine does
            not read), or is corrupt or truncated.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "no such file")
    if path.is_dir():
        raise InputFileError(path, "is a folder, not an image file")
    try:
        with warnings.catch_warnings():
            # A DecompressionBombWarning would only be noise for the large photos people really use.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return _decode(path, exif_transpose)
    except PermissionError as error:
        raise InputFileError(path, "permission denied") from error
    except InputFileError:
        raise
    except DFineError as error:
        # to_rgb's message does not know the file; without the path a folder run could not say which one it was.
        raise InputFileError(path, str(error)) from error
    except UnidentifiedImageError as error:
        problem = unread_image_problem(path) if is_unread_image(path) else "not an image file, or an image " \
            "format PIL cannot read"
        raise InputFileError(path, problem) from error
    except Image.DecompressionBombError as error:
        raise InputFileError(path, f"image is too large to decode safely ({error})") from error
    except (OSError, SyntaxError, ValueError) as error:
        # PIL reports truncated and corrupt data as OSError (and a few decoders as SyntaxError/ValueError).
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputFileError(path, f"unreadable or corrupt image ({detail})") from error


def _load_url_image(url: str, exif_transpose: bool) -> Image.Image:
    """The image at ``url``, through a temporary file (JPEGs missing their end marker are read as from disk); its
    problems name the URL."""
    from dfine.imaging.download import download

    with tempfile.TemporaryDirectory(prefix="dfine-download-") as folder:
        path = download(url, folder)
        try:
            return load_image(path, exif_transpose)
        except InputFileError as error:
            raise InputFileError(url, error.problem) from None


def load_image(path: str | Path, exif_transpose: bool = True) -> Image.Image:
    """Read an image file, or an http(s) URL of one, as an upright 8-bit RGB PIL image (:func:`decode_file`).

    Args:
        path: the image file, or an http(s) URL of one (a string; :mod:`dfine.imaging.download`).
        exif_transpose: as for :func:`decode_file` (a flag here).

    Returns:
        An ``RGB`` image, fully loaded (the file is closed). For multi-frame files (GIF, TIFF) the first frame.

    Raises:
        InputFileError: as :func:`decode_file`.
        DFineError: a URL could not be downloaded.
    """
    if is_url(path):
        return _load_url_image(str(path).strip(), exif_transpose)
    return decode_file(path, exif_transpose).image
