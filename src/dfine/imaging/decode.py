"""Decoding picture files to upright 8-bit RGB, the one decoder that training, prediction and the runtime share.

Every problem a user can fix (a wrong path, a file that is not an image, a corrupt one) raises an
:class:`~dfine.errors.InputFileError` naming the path, so the command line can print one line instead of a
traceback.

Colour conventions (shared with :mod:`dfine.processing.processor`, which calls :func:`to_rgb` on PIL inputs):

* grayscale (``L``, ``1``) is replicated to three channels;
* palette images (``P``) are expanded through their palette;
* **alpha is dropped, not composited**: the RGB values stored under transparent pixels are kept as they are. This
  is what ``PIL.Image.convert("RGB")`` does and what the original D-FINE inference scripts feed the network, so
  the checkpoints see the same pixels they were evaluated with;
* CMYK is converted with PIL's plain formula (no ICC colour management);
* 16-bit grayscale (``I;16`` / ``I`` with values above 255) is scaled to 8 bits instead of being clipped.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dfine.errors import DFineError, InputFileError
from dfine.imaging.download import is_url


def to_rgb(image: Image.Image) -> Image.Image:
    """Return ``image`` as an 8-bit RGB PIL image (see the module docstring for the colour rules).

    Args:
        image: any PIL image.

    Returns:
        A new ``RGB`` image of the same size (``image`` itself when it is already RGB).

    Raises:
        DFineError: the colour mode cannot be converted to RGB.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        # PIL's own conversion clips 16-bit values at 255, which turns most 16-bit PNGs white.
        array = np.asarray(image).astype(np.float64)
        if array.size and array.max() > 255:
            array = array * (255.0 / 65535.0)
        return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8)).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        # Going through RGBA avoids PIL's warning about byte transparency; the RGB values are the palette's.
        image = image.convert("RGBA")
    try:
        return image.convert("RGB")
    except ValueError:
        try:
            return image.convert("RGBA").convert("RGB")
        except ValueError as error:
            raise DFineError(f"cannot convert an image in colour mode {mode!r} to RGB") from error


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


def decode_image_file(path: Path) -> tuple[Image.Image, bool]:
    """The fully decoded image (close it, or use it in a ``with``), and whether it is a JPEG that lacks only its
    end marker (accepted: all image data is there). Raises PIL's errors for anything else."""
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
    """Read an image file as an RGB PIL image.

    Args:
        path: the image file, or an http(s) URL of one (a string; :mod:`dfine.imaging.download`).
        exif_transpose: rotate/flip the pixels as the EXIF ``Orientation`` tag says, so the image looks the way
            viewers show it. Data loaders whose annotations were drawn on the raw pixel grid (as COCO's were) should
            pass ``False``.

    Returns:
        An ``RGB`` image, fully loaded (the file is closed). For multi-frame files (GIF, TIFF) the first frame.

    Raises:
        InputFileError: the file is missing, is a folder, cannot be read, is not an image, or is corrupt or
            truncated.
        DFineError: a URL could not be downloaded.
    """
    if is_url(path):
        return _load_url_image(str(path).strip(), exif_transpose)
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "no such file")
    if path.is_dir():
        raise InputFileError(path, "is a folder, not an image file")
    try:
        with warnings.catch_warnings():
            # A DecompressionBombWarning would only be noise for the large photos people really use.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened, _ = decode_image_file(path)  # a JPEG missing only its end marker is fine: all pixels are there
            with opened:
                image = ImageOps.exif_transpose(opened) if exif_transpose else opened
                rgb = to_rgb(image)
                # Never hand out the object tied to the (now closing) file.
                return rgb.copy() if rgb is opened else rgb
    except PermissionError as error:
        raise InputFileError(path, "permission denied") from error
    except InputFileError:
        raise
    except DFineError as error:
        # to_rgb's message does not know the file; without the path a folder run could not say which one it was.
        raise InputFileError(path, str(error)) from error
    except UnidentifiedImageError as error:
        raise InputFileError(path, "not an image file, or an image format PIL cannot read") from error
    except Image.DecompressionBombError as error:
        raise InputFileError(path, f"image is too large to decode safely ({error})") from error
    except (OSError, SyntaxError, ValueError) as error:
        # PIL reports truncated and corrupt data as OSError (and a few decoders as SyntaxError/ValueError).
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputFileError(path, f"corrupt or truncated image ({detail})") from error
