"""The file extensions dfine reads as pictures and as videos: one table for every reader.

Training, prediction and the torch-free runtime all list and open files through these sets, so an extension that
one of them accepts is accepted by all of them, and a photo of a type none of them reads is named with the same
line (:func:`unread_image_problem`) wherever it turns up.
"""

from __future__ import annotations

from pathlib import Path

#: File extensions (lower case, with the dot) treated as images when listing folders and glob matches.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".mpo", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
)

#: Photo types found in picture folders that are not listed as images: HEIC/AVIF/JPEG XL need plug-ins or newer
#: Pillow builds, raw camera files a raw converter, and the rarer Netpbm/JPEG 2000 variants a PIL build may lack.
#: Listing them would make a data set's image list depend on the Pillow build; they are left out and named instead.
UNREAD_IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".heic", ".heif", ".avif", ".jxl", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".raw", ".pbm", ".pfm", ".jp2"}
)

#: File extensions (lower case, with the dot) treated as videos when listing folders and glob matches.
VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp"}
)


def accepted_image_types() -> str:
    """The readable extensions as a message lists them (sorted, comma-separated)."""
    return ", ".join(sorted(IMAGE_EXTENSIONS))


def is_unread_image(path: str | Path) -> bool:
    """Whether ``path`` has the extension of a photo type dfine does not read (:data:`UNREAD_IMAGE_EXTENSIONS`)."""
    return Path(path).suffix.lower() in UNREAD_IMAGE_EXTENSIONS


def unread_image_problem(path: str | Path) -> str:
    """The one line (without the path) that every reader gives for a photo of an unread type: data set listings
    leaving it out, and the decoder when Pillow cannot open it."""
    suffix = Path(path).suffix.lower()
    return f"{suffix} is not an image type dfine reads (convert it to one of {accepted_image_types()})"
