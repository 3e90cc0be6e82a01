"""YOLO-txt annotations (the Ultralytics layout): ``data.yaml``, image lists and label files.

``data.yaml`` names the classes (``names``: a list, or a dict ``{id: name}``) and the splits (``train``, ``val``:
an image folder, a text file listing images, or a list of those), relative to ``path:`` (itself relative to the
YAML's folder) or to the YAML's folder. The labels of ``.../images/<rest>.jpg`` are in ``.../labels/<rest>.txt``
(or beside the image, see :func:`label_path`), one ``class cx cy w h`` line per object, normalised to the image
size. A missing label file means "no objects"; one label file for several images (``a.jpg`` and ``a.png``) is a
problem, as which image it belongs to is unknown. Ultralytics segmentation lines (``class x1 y1 x2 y2 ...``, three
points or more) give their polygon as the object's instance mask (:mod:`dfine.data.polygons`) and its bounding box as
the box; in a data set with such lines, a box-only line is an object without a mask (refused for segmentation).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from dfine.data.dataset import DetectionDataset, Transforms
from dfine.data.images import probe_images
from dfine.data.index import CategoryTable, DetectionIndex, IndexBuilder
from dfine.data.polygons import MIN_POLYGON_POINTS, normalised_polygon
from dfine.errors import InputFileError
from dfine.imaging.formats import IMAGE_EXTENSIONS, accepted_image_types, is_unread_image, unread_image_problem
from dfine.imaging.sources import folder_images


@dataclass(frozen=True)
class YoloConfig:
    """A parsed ``data.yaml``.

    Attributes:
        yaml_file: the file.
        root: the folder split paths are relative to.
        categories: the class table (class ids as in the label files).
        splits: split name -> image folders / image list files / images.
        notes: paths that had to be reinterpreted to be found (reported by the data set check).
    """

    yaml_file: Path
    root: Path
    categories: CategoryTable
    splits: dict[str, tuple[Path, ...]]
    notes: tuple[str, ...] = field(default=())


def _names(value: Any, nc: Any, path: Path) -> CategoryTable:
    if isinstance(value, list) and value:
        names = {i: str(n) for i, n in enumerate(value)}
    elif isinstance(value, dict) and value:
        try:
            names = {int(k): str(v) for k, v in value.items()}
        except (TypeError, ValueError):
            raise InputFileError(path, "'names' keys must be integer class ids") from None
    else:
        raise InputFileError(path, "'names' must be a non-empty list of class names or a {class id: name} mapping")
    if nc is not None and nc != len(names):
        raise InputFileError(path, f"'nc' is {nc} but 'names' has {len(names)} entries")
    for class_id, name in value.items() if isinstance(value, dict) else enumerate(value):
        if name is None or not str(name).strip():
            # an empty entry ('- ' or '{0: }') reads as null: the class would be called 'None'
            raise InputFileError(path, f"class {class_id} in 'names' has no name")
    if min(names) < 0:
        raise InputFileError(path, "class ids in 'names' must not be negative")
    ids = sorted(names)
    return CategoryTable(tuple(ids), tuple(names[i] for i in ids))


def data_root(config: dict[str, Any], yaml_file: Path) -> Path:
    """The folder a data YAML's split paths are relative to: its ``path:`` (relative to the YAML) or its folder."""
    yaml_dir = yaml_file.parent.resolve()
    path = config.get("path")
    if path and not isinstance(path, str):
        raise InputFileError(yaml_file, f"'path' must be a folder (a string), got {path!r}")
    root = Path(path) if path else yaml_dir
    return root if root.is_absolute() else yaml_dir / root


def _resolve(entry: str, root: Path, yaml_dir: Path, notes: list[str]) -> Path:
    path = Path(entry)
    if path.is_absolute():
        return path
    resolved = root / path
    if not resolved.exists():
        # Roboflow writes `train: ../train/images` next to a data.yaml that sits beside `train/`.
        parts = path.parts
        while parts and parts[0] == "..":
            parts = parts[1:]
        fallback = yaml_dir.joinpath(*parts) if parts else yaml_dir
        if fallback.exists():
            notes.append(f"'{entry}' does not exist relative to {root}; using {fallback}")
            return fallback
    return resolved


def split_entries(data: dict[str, Any], yaml_file: Path) -> dict[str, list[str]]:
    """The ``train`` / ``val`` / ``test`` entries a data YAML gives, each as a list of path strings.

    Raises:
        InputFileError: an entry that is neither a path nor a list of paths.
    """
    splits: dict[str, list[str]] = {}
    for split in ("train", "val", "test"):
        entry = data.get(split)
        if entry is None:
            continue
        entries = entry if isinstance(entry, list) else [entry]
        if not all(isinstance(e, str) for e in entries):
            raise InputFileError(yaml_file, f"'{split}' must be a path or a list of paths, got {entry!r}")
        splits[split] = entries
    return splits


def load_yaml(path: Path) -> Any:
    """The content of a data YAML.

    Raises:
        InputFileError: the file is missing, unreadable, not text or not valid YAML.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except FileNotFoundError:
        raise InputFileError(path, "data YAML is missing") from None
    except UnicodeDecodeError:  # a ValueError, not an OSError: a binary file (or a YAML saved in another encoding)
        raise InputFileError(path, "not a UTF-8 text file: a data YAML must be text") from None
    except (OSError, yaml.YAMLError) as e:
        raise InputFileError(path, f"invalid YAML ({str(e).splitlines()[0]})") from None


def read_yolo_yaml(yaml_file: str | Path) -> YoloConfig:
    """Parse an Ultralytics-style ``data.yaml``.

    Raises:
        InputFileError: a missing or invalid file, missing ``names``, or a split entry of the wrong type.
    """
    path = Path(yaml_file)
    data = load_yaml(path)
    if not isinstance(data, dict) or "names" not in data:
        raise InputFileError(path, "not a YOLO data.yaml: it needs 'names' and 'train'/'val' entries")
    categories = _names(data["names"], data.get("nc"), path)
    root = data_root(data, path)
    notes: list[str] = []
    splits = {split: tuple(_resolve(e, root, path.parent.resolve(), notes) for e in entries)
              for split, entries in split_entries(data, path).items()}
    return YoloConfig(path, root, categories, splits, tuple(notes))


def list_images(sources: tuple[Path, ...] | list[Path], root: Path | None = None,
                left_out: list[Path] | None = None) -> tuple[list[Path], list[str]]:
    """The images of a split, sorted, from folders (searched recursively, skipping hidden files and folders), list
    files and single images (both taken as named, hidden or not).

    A relative line of a list file is relative to the list's folder; a line without a leading ``./`` that names
    no file there but does below ``root`` (the data set's ``path:``) is taken from ``root``: Darknet-style lists
    write paths relative to the data set, Ultralytics ones relative to the list.

    Returns:
        The image paths and one problem line per source that does not exist.
    """
    images: list[Path] = []
    problems: list[str] = []
    for source in sources:
        if source.is_dir():
            images += folder_images(source, recursive=True, left_out=left_out)
        elif source.is_file() and source.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(source)
        elif source.is_file():
            # An image list: "./x" is relative to the list's folder (Ultralytics), other relative paths too.
            lines, problem = _read_image_list(source)
            if problem is not None:
                problems.append(f"{source}: {problem}")
            for line in lines:
                line = line.strip()
                if line:
                    images.append(_list_entry(line, source.parent, root))
        else:
            problems.append(f"{source}: image folder or list does not exist")
    return sorted(set(images)), problems


def _read_image_list(source: Path) -> tuple[list[str], str | None]:
    """The lines of an image list file, or a problem when the file is not one (an image of a type not accepted,
    another binary file)."""
    accepted = accepted_image_types()
    if is_unread_image(source):
        return [], f"{unread_image_problem(source)}, nor a text list of images"
    if source.suffix.lower() in Image.registered_extensions():
        return [], f"not an accepted image type ({source.suffix}; accepted: {accepted}) nor a text list of images"
    try:
        text = source.read_text(encoding="utf-8-sig")
    except OSError as e:
        return [], f"cannot read the image list ({e.strerror or e})"
    except UnicodeDecodeError:
        text = "\0"
    if "\0" in text:  # valid UTF-8 can still be binary: text lists never hold NUL characters
        return [], f"not a text list of images (nor an image of an accepted type: {accepted})"
    return text.splitlines(), None


def _list_entry(line: str, list_folder: Path, root: Path | None) -> Path:
    path = Path(line)
    if path.is_absolute():
        return path
    beside_list = list_folder / path
    if root is not None and not line.startswith("./") and not beside_list.exists() and (root / path).exists():
        return root / path
    return beside_list


def label_path(image: Path, root: Path | None = None) -> Path:
    """The label file of an image: ``.../images/<rest>.<ext>`` -> ``.../labels/<rest>.txt`` (the last ``images``
    folder below ``root``, the data set's folder, is swapped), or ``<image>.txt`` beside the image (CVAT YOLO 1.1,
    LabelImg) when there is no such folder or the swapped file does not exist but that one does.

    Only folders below ``root`` count: a data set stored under, say, ``/home/u/images/`` has no ``/home/u/labels/``.
    An image outside ``root`` (an absolute path in a list) may swap any of its folders, as Ultralytics does.
    """
    candidates = _label_candidates(image, root)
    return _existing_label_file(candidates) or candidates[0]


def _label_candidates(image: Path, root: Path | None) -> tuple[Path, ...]:
    """The files :func:`label_path` chooses from, most preferred first: the swapped ``labels/`` file (when the image
    is in an ``images`` folder below ``root``), then ``<image>.txt`` beside the image. No file is looked at."""
    beside = image.with_suffix(".txt")
    parts = image.parts
    below = _parts_above(image, root)
    for i in range(len(parts) - 2, below - 1, -1):
        if parts[i] == "images":
            return Path(*parts[:i], "labels", *parts[i + 1:]).with_suffix(".txt"), beside
    return (beside,)


def _existing_label_file(candidates: tuple[Path, ...]) -> Path | None:
    """The first of ``candidates`` that is a file, or None: one stat per candidate tried, stopping at the first
    found (data sets of a million images pay for every extra one)."""
    return next((candidate for candidate in candidates if candidate.is_file()), None)


def _parts_above(image: Path, root: Path | None) -> int:
    """How many leading components of ``image`` are ``root`` itself or above it (0 when it is not below root)."""
    if root is None:
        return 0
    for path, folder in ((image, root), (Path(os.path.abspath(image)), Path(os.path.abspath(root)))):
        try:
            return len(path.parts) - len(path.relative_to(folder).parts)
        except ValueError:
            continue
    return 0


def _parse_label_file(builder: IndexBuilder, image_id: int, label_file: Path, width: int, height: int) -> None:
    try:
        # utf-8-sig: Windows tools (Notepad, some exporters) start files with a byte-order mark
        text = label_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        builder.problem(str(label_file), f"cannot read the label file ({e})")
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        where = f"{label_file}:{lineno}"
        try:
            values = [float(p) for p in parts]
        except ValueError:
            bad = next(p for p in parts if not _is_float(p))
            builder.problem(where, f"non-numeric value '{bad}' (expected 'class cx cy w h')")
            continue
        segmentation = None
        if len(values) == 5:
            class_id, cx, cy, w, h = values
            box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
            coords = values[1:]
        elif len(values) >= 1 + 2 * MIN_POLYGON_POINTS and len(values) % 2 == 1:
            class_id, coords = values[0], values[1:]
            xs, ys = coords[0::2], coords[1::2]
            box = (min(xs) * width, min(ys) * height, max(xs) * width, max(ys) * height)
            segmentation = [normalised_polygon(coords, width, height)]
        elif len(values) > 5:  # an even count: a polygon line with an odd number of coordinates
            builder.problem(where, f"a polygon line 'class x1 y1 x2 y2 x3 y3 ...' with an odd number of coordinates "
                                   f"({len(values) - 1})")
            continue
        else:
            builder.problem(where, f"expected 5 values 'class cx cy w h', got {len(values)}")
            continue
        if not class_id.is_integer():
            builder.problem(where, f"class id {parts[0]} is not an integer")
            continue
        if max(abs(v) for v in coords) > 2.0:
            builder.problem(where, "coordinates are not normalised to 0..1 (pixel values?)")
            continue
        builder.add_box(image_id, int(class_id), box, where, segmentation=segmentation)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _shared_label_files(images: list[Path], label_files: list[Path | None]) -> dict[Path, list[Path]]:
    """Existing label files that more than one image maps to (``a.jpg`` and ``a.png`` both -> ``a.txt``).

    ``label_files`` holds each image's existing label file, or None. A missing one is not listed: both images are
    then backgrounds, which is not wrong in itself.
    """
    owners: dict[Path, list[Path]] = {}
    for image, label_file in zip(images, label_files, strict=True):
        if label_file is not None:
            owners.setdefault(label_file, []).append(image)
    return {label: found for label, found in owners.items() if len(found) > 1}


def _shared_label_problem(label_file: Path, images: list[Path]) -> str:
    names = [str(image) for image in images]
    both = ", ".join(names[:-1]) + f" and {names[-1]}"
    return f"{both} share the label file {label_file}: rename {'one of them' if len(names) == 2 else 'all but one'}"


def load_yolo_index(
    sources: tuple[Path, ...] | list[Path],
    categories: CategoryTable,
    *,
    source: Path,
    root: Path | None = None,
    progress: bool = False,
) -> DetectionIndex:
    """Parse one YOLO split, applying the repair rules of :mod:`dfine.data.index`.

    Image sizes come from the file headers (after EXIF orientation, as Ultralytics does); problems are collected
    in ``index.problems``, not raised.

    Args:
        sources: the split's image folders / list files / images.
        categories: the class table from ``data.yaml``.
        source: the data YAML, for messages.
        root: the data set root; ground-truth ``file_name`` entries are relative to it when possible.
        progress: show a progress bar while reading headers of many images.
    """
    left_out: list[Path] = []
    images, problems = list_images(sources, root, left_out)
    builder = IndexBuilder(source, categories)
    builder.problems.extend(problems)
    for path in sorted(left_out):
        builder.repairs.add(f"image left out: {unread_image_problem(path)}", str(path))
    # each image's label file, looked up once: both the shared-file check and the parsing below use it
    label_files = [_existing_label_file(_label_candidates(image, root)) for image in images]
    shared = _shared_label_files(images, label_files)
    builder.problems.extend(_shared_label_problem(label_file, owners) for label_file, owners in shared.items())
    infos = probe_images(images, progress=progress)
    for image_id, (image, info, label_file) in enumerate(zip(images, infos, label_files, strict=True)):
        if isinstance(info, InputFileError):
            builder.problem(info.path, info.problem)
            continue
        try:
            file_name = os.path.relpath(image, root) if root is not None else str(image)
        except ValueError:  # another drive on Windows
            file_name = str(image)
        builder.add_image(image_id, image, file_name, info.width, info.height)
        if label_file is not None:
            # A shared label file belongs to at most one of its images, and which one is unknown: it is reported
            # above, and its boxes given to neither.
            if label_file not in shared:
                _parse_label_file(builder, image_id, label_file, info.width, info.height)
    # counted over every image, read or not: the label files of unreadable images exist all the same, and saying
    # they do not would send the user looking for a layout problem instead of at the images reported above
    if images and not any(label_files):
        builder.problem(
            str(source),
            f"none of the {len(images)} images has a label file (expected e.g. {label_path(images[0], root)})",
        )
    if not images and not problems:
        builder.problem(str(source), f"no images found in {', '.join(str(s) for s in sources)}")
    return builder.build()


class YoloDetection(DetectionDataset):
    """A YOLO-txt data set split described by a ``data.yaml``.

    Args:
        data_yaml: the Ultralytics-style data YAML.
        split: ``"train"``, ``"val"`` or ``"test"``.
        transforms: called as ``transforms(image, target)``.

    Raises:
        InputFileError: the YAML is invalid or has no such split.
        DatasetError: listing every annotation problem that cannot be repaired.
    """

    def __init__(self, data_yaml: str | Path, split: str = "train", transforms: Transforms | None = None) -> None:
        config = read_yolo_yaml(data_yaml)
        if split not in config.splits:
            raise InputFileError(config.yaml_file, f"has no '{split}' entry")
        index = load_yolo_index(config.splits[split], config.categories, source=config.yaml_file, root=config.root)
        super().__init__(index, transforms)
