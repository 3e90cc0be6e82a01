"""The file extensions dfine reads as pictures and as videos: one table for every reader.

Training, prediction and the torch-free runtime all list and open files through these sets, so an extension that
one of them accepts is accepted by all of them.
"""

from __future__ import annotations

#: File extensions (lower case, with the dot) treated as images when listing folders and glob matches.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".mpo", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
)

#: File extensions (lower case, with the dot) treated as videos when listing folders and glob matches.
VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp"}
)
