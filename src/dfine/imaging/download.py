"""Images and videos given as http(s) URLs: ``dfine predict https://.../street.jpg`` and
``Predictor.predict("https://...")``, as Hugging Face pipelines and other detectors accept them.

Only the standard library is used (``urllib``), so a URL needs no extra dependency. A failed download is one line
naming the URL and the reason (HTTP status, unreachable host, timeout), never a traceback.
"""

from __future__ import annotations

import contextlib
import http.client
import mimetypes
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from dfine.errors import DFineError, first_line

__all__ = ["download", "is_url", "url_file_name"]

# Servers that refuse Python's default agent (several image hosts do) accept a browser-like one; ours says who it is.
_HEADERS = {"User-Agent": "Mozilla/5.0 (compatible; dfine)"}
_TIMEOUT_S = 30.0
_CHUNK = 1 << 20
# Content types whose usual extension mimetypes does not give the one our readers and writers expect (it names
# Matroska .mpv, and knows no extension for MPEG-TS, 3GPP or the older BMP type).
_EXTENSIONS = {"image/jpeg": ".jpg", "image/jpg": ".jpg", "image/pjpeg": ".jpg", "image/x-ms-bmp": ".bmp",
               "video/quicktime": ".mov", "video/x-matroska": ".mkv", "video/matroska": ".mkv", "video/mp2t": ".ts",
               "video/3gpp": ".3gp", "video/x-flv": ".flv", "video/x-ms-wmv": ".wmv", "video/x-m4v": ".m4v"}


def is_url(source: object) -> bool:
    """Whether ``source`` is an http(s) URL (a string; paths are never URLs)."""
    return isinstance(source, str) and re.match(r"(?i)^https?://\S+$", source.strip()) is not None


def url_file_name(url: str, content_type: str | None = None) -> str:
    """A safe file name for what ``url`` serves: the last part of its path (``.../street.jpg`` -> ``street.jpg``),
    with an extension from ``content_type`` when the path has no image or video one (``.../photo?id=3`` served as
    ``image/png`` -> ``photo.png``), since files are told apart (image or video) by extension."""
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    name = re.sub(r"[^\w.\-]+", "_", name).strip("._") or "download"
    if re.fullmatch(r"(?i)(con|prn|aux|nul|com\d|lpt\d)(\..*)?", name):
        name = "_" + name  # Windows opens a device, not a file, for these names (with any extension)
    if content_type and not _is_picture_name(name):
        # also for a script's name (``.../watch.php?v=3`` served as video/mp4): the extension decides the reader
        kind = content_type.split(";")[0].strip().lower()
        extension = _EXTENSIONS.get(kind) or mimetypes.guess_extension(kind)
        if extension and (not Path(name).suffix or _is_picture_name(name + extension)):
            name += extension
    return _shortened(name)


def _shortened(name: str, limit: int = 120) -> str:
    """``name`` cut to ``limit`` bytes of UTF-8, its extension kept: CDN names can pass the 255 bytes a file name
    may have (fewer characters where they are not ASCII), and the download would fail with 'File name too long'."""
    if len(name.encode("utf-8")) <= limit:
        return name
    suffix = Path(name).suffix if len(Path(name).suffix) < 16 else ""
    stem = name[:len(name) - len(suffix)]
    while len((stem + suffix).encode("utf-8")) > limit:
        stem = stem[:-1]
    return stem + suffix


def _is_picture_name(name: str) -> bool:
    """Whether ``name`` ends in an image or video extension (imported here: dfine.imaging.decode imports this
    module)."""
    from dfine.imaging.formats import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

    return Path(name).suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS


def _open(url: str) -> http.client.HTTPResponse:
    request = urllib.request.Request(url, headers=_HEADERS)
    try:
        return urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as error:
        raise DFineError(f"{url}: could not download (HTTP {error.code} {error.reason})") from None
    except urllib.error.URLError as error:  # e.g. an unknown host or a refused connection
        reason = error.reason
        text = first_line(reason) if isinstance(reason, BaseException) else str(reason)
        raise DFineError(f"{url}: could not download ({text})") from None
    except (TimeoutError, OSError, ValueError, http.client.HTTPException) as error:  # a timeout, a malformed URL
        raise DFineError(f"{url}: could not download ({first_line(error)})") from None


def _bar(name: str, total: int | None, show: bool) -> Any:
    """A byte-count progress bar (tqdm, imported only when shown: the torch-free runtime reads URLs too)."""
    if not show:
        return contextlib.nullcontext(_NoBar())
    from tqdm import tqdm

    return tqdm(total=total, desc=name, unit="B", unit_scale=True, leave=False)


class _NoBar:
    def update(self, count: int) -> None:
        pass


def download(url: str, folder: str | Path, progress: bool = False) -> Path:
    """Fetch ``url`` into ``folder`` (named by :func:`url_file_name`) and return the file's path.

    Raises:
        DFineError: the server answers with an error, cannot be reached, stops sending, or sends nothing.
    """
    folder = Path(folder)
    with _open(url) as response:
        target = folder / url_file_name(response.geturl(), response.headers.get("Content-Type"))
        total = response.headers.get("Content-Length")
        size = 0
        try:
            with open(target, "wb") as out, _bar(target.name, int(total) if total and total.isdigit() else None,
                                                 progress) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
        except (TimeoutError, OSError, http.client.HTTPException) as error:  # e.g. IncompleteRead
            target.unlink(missing_ok=True)
            raise DFineError(f"{url}: the download broke off ({first_line(error)})") from None
    if size == 0:
        target.unlink(missing_ok=True)
        raise DFineError(f"{url}: the server sent an empty file")
    if not _is_picture_name(target.name):
        # neither the URL nor the served type said what it is (application/octet-stream): images are recognised by
        # their content wherever they are read, but a video is told apart by its extension, so look at its bytes
        extension = _video_extension(target)
        if extension is not None:
            target = target.rename(target.with_name(_shortened(target.name + extension)))
    return target


def _video_extension(path: Path) -> str | None:
    """The extension of the video container whose signature ``path`` starts with, or None."""
    with open(path, "rb") as f:
        head = f.read(192)
    if head[4:8] == b"ftyp":
        return ".mov" if head[8:12] == b"qt  " else ".mp4"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free"):
        return ".mov"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return ".mkv"  # Matroska and WebM
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return ".avi"
    if head[:3] == b"FLV":
        return ".flv"
    if head[:4] == b"\x00\x00\x01\xba":
        return ".mpg"
    if len(head) > 188 and head[0] == head[188] == 0x47:
        return ".ts"  # MPEG-TS packets are 188 bytes, each starting with 0x47
    return None
