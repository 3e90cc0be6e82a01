"""Pascal VOC XML annotations (the VOC devkit, LabelImg, CVAT "PASCAL VOC 1.1", Roboflow and Label Studio exports).

One XML file per image: ``<annotation>`` with ``<filename>``, ``<size>`` (``<width>``, ``<height>``) and one
``<object>`` per box (``<name>``, ``<difficult>``, ``<bndbox>`` with ``<xmin> <ymin> <xmax> <ymax>``). The layouts
(:func:`find_voc_layout`):

- ``Annotations/`` + ``JPEGImages/`` (or ``images/``), the splits listed in ``ImageSets/Main/<split>.txt`` (devkit,
  CVAT); without lists, every XML file is the training split;
- ``<split>/`` folders each holding images and their XML files side by side (Roboflow's ``train/`` + ``valid/``);
- one folder of images and XML files (LabelImg): the training split.

Rules:

- Coordinates. The devkit's are 1-based inclusive pixel indices (``xmin = 1`` is the first column, ``xmax = W``
  the last), so a box covers ``[xmin - 1, xmax]`` in the pixel-edge coordinates used everywhere else, as
  detectron2's ``pascal_voc.py`` reads them (the devkit's ``VOCevaldet.m`` adds 1 to widths for the same reason).
  CVAT (datumaro's ``_write_xml_bbox``) writes pixel-edge coordinates as decimals (``12.0``, ``12.5``): a file whose
  coordinates are written with a decimal point or exponent is read as is. The choice is per file, since one tool
  wrote the whole file.
- ``difficult`` objects are crowd regions (``iscrowd``): never training targets, and a detection on one neither
  helps nor hurts AP, as the devkit's evaluation ignores them. ``truncated`` and ``occluded`` objects are ordinary.
- Classes: a ``labels.txt`` / ``classes.txt`` / CVAT ``labelmap.txt`` in the data set folder gives them in its order
  (labelmap's ``background`` entry, a segmentation-mask class, is left out); without one, the names found in the XML
  files of every split, sorted. For the 20 VOC classes that is the devkit's own order, which is alphabetical.
- Sizes come from ``<size>``, and the data set check compares them with the image files, as for COCO; a missing or
  zero size (some converters) is read from the image (a repair).
- Images: ``<filename>`` in the image folder, or its base name (LabelImg may write the annotator's folder); when it
  names no file, the image named like the XML file (``<id>.jpg``, ...), as the devkit and torchvision find images.

XML is parsed by the standard library's expat with any ``<!DOCTYPE`` refused before its contents are read: entities
can only be declared in one, so entity expansion ("billion laughs") and external entities cannot happen, and no VOC
tool writes one. (``defusedxml`` does the same by refusing entity declarations; this needs no dependency.)
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from xml.parsers import expat

from dfine.data.images import probe_image
from dfine.data.index import CategoryTable, DetectionIndex, IndexBuilder
from dfine.errors import InputFileError
from dfine.imaging.formats import IMAGE_EXTENSIONS
from dfine.imaging.sources import is_hidden_below

CLASS_LIST_FILES = ("labels.txt", "classes.txt", "labelmap.txt")
ANNOTATION_FOLDERS = ("Annotations", "annotations")
IMAGE_FOLDERS = ("JPEGImages", "images", "Images")
_SPLIT_LIST_NAMES = ("train", "val", "trainval", "test")
_TRUE, _FALSE = ("1", "true", "yes"), ("", "0", "false", "no")


# ------------------------------------------------------------------------------------------------ reading a file
@dataclass(frozen=True)
class VocObject:
    """One ``<object>``: its class name, its box as absolute pixel-edge ``xyxy``, and whether it is difficult."""

    name: str
    box: tuple[float, float, float, float]
    difficult: bool


@dataclass(frozen=True)
class VocFile:
    """One parsed XML file.

    Attributes:
        path: the file.
        filename: its ``<filename>`` (None when absent).
        size: ``(width, height)`` from ``<size>``; None when absent or zero.
        objects: the usable objects, in file order, each with its 1-based position in the file.
        problems: one line per problem, each naming the file; with ``usable`` False the file gives no image.
        usable: whether the file could be read as a VOC annotation at all.
    """

    path: Path
    filename: str | None
    size: tuple[int, int] | None
    objects: tuple[tuple[int, VocObject], ...]
    problems: tuple[str, ...]
    usable: bool = True


class _Refused(Exception):
    """A DOCTYPE or entity declaration met while parsing."""


def parse_xml(path: Path) -> ET.Element:
    """The root element of an XML file, parsed without ever expanding entities (see the module docstring).

    Raises:
        InputFileError: unreadable, malformed, or with a DOCTYPE.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputFileError(path, f"cannot read the annotation file ({e.strerror or e})") from None
    parser, builder = expat.ParserCreate(), ET.TreeBuilder()

    def refuse(*_: object) -> None:
        raise _Refused

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse  # unreachable without a DOCTYPE; a second lock on the same door
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    parser.buffer_text = True
    try:
        parser.Parse(data, True)
    except _Refused:
        raise InputFileError(path, "has a <!DOCTYPE> declaration, which Pascal VOC files never have: refused, as it "
                                   "can declare entities that expand without bound") from None
    except expat.ExpatError as e:
        raise InputFileError(path, f"not valid XML ({expat.ErrorString(e.code)} at line {e.lineno}, column "
                                   f"{e.offset + 1})") from None
    return builder.close()


def _text(element: ET.Element, tag: str) -> str | None:
    """The stripped text of the first ``tag`` child; "" when it is empty, None when there is none."""
    child = element.find(tag)
    if child is None:
        return None
    return (child.text or "").strip()


def _size(root: ET.Element) -> tuple[int, int] | None | str:
    """``(width, height)``, None when ``<size>`` is absent or zero (read from the image instead), or the problem."""
    size = root.find("size")
    if size is None:
        return None
    values = []
    for tag in ("width", "height"):
        text = _text(size, tag)
        if not text:
            return None
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not value.is_integer() or value < 0:
            return f"<size> <{tag}> must be a whole number of pixels, got '{text}'"
        values.append(int(value))
    return (values[0], values[1]) if values[0] and values[1] else None


def _object(element: ET.Element, continuous: bool) -> VocObject | str:
    """An ``<object>`` as a :class:`VocObject`, or its problem."""
    name = _text(element, "name")
    if not name:
        return "has no class <name>"
    difficult = (_text(element, "difficult") or "").lower()
    if difficult not in _TRUE + _FALSE:
        return f"'{name}': <difficult> must be 0 or 1, got '{difficult}'"
    box = element.find("bndbox")
    if box is None:
        return f"'{name}' has no <bndbox>"
    values = {}
    for tag in ("xmin", "ymin", "xmax", "ymax"):
        text = _text(box, tag)
        if not text:
            return f"'{name}': <bndbox> has no <{tag}>"
        try:
            values[tag] = float(text)
        except ValueError:
            return f"'{name}': <{tag}> '{text}' is not a number"
    for low, high in (("xmin", "xmax"), ("ymin", "ymax")):
        if values[low] > values[high]:
            return f"'{name}': {low} {values[low]:g} > {high} {values[high]:g}"
    offset = 0.0 if continuous else 1.0  # 1-based inclusive pixel indices -> pixel edges
    xyxy = (values["xmin"] - offset, values["ymin"] - offset, values["xmax"], values["ymax"])
    return VocObject(name, xyxy, difficult in _TRUE)


def _is_continuous(root: ET.Element) -> bool:
    """Whether the file writes its coordinates as decimals (pixel edges) rather than integers (1-based pixels)."""
    texts = (c.text or "" for b in root.iter("bndbox") for c in b if c.tag in ("xmin", "ymin", "xmax", "ymax"))
    return any(mark in text for text in texts for mark in ".eE")


def read_voc_file(path: Path) -> VocFile:
    """Parse one VOC XML file; problems are collected in the result, not raised."""
    try:
        root = parse_xml(path)
    except InputFileError as e:
        return VocFile(path, None, None, (), (str(e),), usable=False)
    if root.tag != "annotation":
        problem = f"{path}: not a Pascal VOC annotation (the root element is <{root.tag}>, not <annotation>)"
        return VocFile(path, None, None, (), (problem,), usable=False)
    size = _size(root)
    if isinstance(size, str):
        return VocFile(path, None, None, (), (f"{path}: {size}",), usable=False)
    continuous, objects, problems = _is_continuous(root), [], []
    for number, element in enumerate(root.findall("object"), start=1):
        parsed = _object(element, continuous)
        if isinstance(parsed, str):
            problems.append(f"{path} object {number}: {parsed}")
        else:
            objects.append((number, parsed))
    return VocFile(path, _text(root, "filename") or None, size, tuple(objects), tuple(problems))


class VocFiles:
    """Each XML file parsed once, however many splits and passes (the class names, then each split) read it."""

    def __init__(self) -> None:
        self._files: dict[Path, VocFile] = {}

    def read(self, path: Path) -> VocFile:
        if path not in self._files:
            self._files[path] = read_voc_file(path)
        return self._files[path]


# ---------------------------------------------------------------------------------------------------- classes
def _list_names(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # Windows tools start files with a byte-order mark
    except (OSError, UnicodeDecodeError) as e:
        raise InputFileError(path, f"cannot read the class list ({e})") from None
    if path.name == "labelmap.txt":  # CVAT / datumaro: "# label:color_rgb:parts:actions", then "name:r,g,b::"
        names = [line.split(":", 1)[0].strip() for line in text.splitlines() if not line.lstrip().startswith("#")]
        return [name for name in names if name and name != "background"]
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_class_list(folder: Path) -> tuple[CategoryTable, Path] | None:
    """The class table from the folder's ``labels.txt`` / ``classes.txt`` / ``labelmap.txt`` (line order), and the
    file; None when there is none.

    Raises:
        InputFileError: an empty list, a name listed twice, or two lists that disagree.
    """
    found = [(folder / name, _list_names(folder / name)) for name in CLASS_LIST_FILES if (folder / name).is_file()]
    if not found:
        return None
    if len({tuple(names) for _, names in found}) > 1:
        raise InputFileError(folder, f"class lists disagree: {', '.join(p.name for p, _ in found)}; keep one")
    path, names = found[0]
    if not names:
        raise InputFileError(path, "the class list is empty: one class name per line is needed")
    repeated = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if repeated is not None:
        raise InputFileError(path, f"class '{repeated}' is listed twice")
    return CategoryTable(tuple(range(len(names))), tuple(names)), path


def classes_in_files(xml_files: Iterable[Path], files: VocFiles) -> CategoryTable:
    """The class names the XML files use, sorted (labels ``0..C-1`` in that order)."""
    names = sorted({obj.name for path in xml_files for _, obj in files.read(path).objects})
    return CategoryTable(tuple(range(len(names))), tuple(names))


# ----------------------------------------------------------------------------------------------------- layouts
@dataclass(frozen=True)
class VocSubset:
    """One subset of a VOC layout: its name, image folder, XML folder and (devkit, CVAT) image-id list."""

    name: str
    images: Path
    annotations: Path
    image_list: Path | None = None


@dataclass(frozen=True)
class VocLayout:
    """What :func:`find_voc_layout` found: the subsets, and for a one-split layout what that split is."""

    subsets: tuple[VocSubset, ...]
    single: str | None = None
    notes: tuple[str, ...] = ()


def _xml_in(folder: Path, recursive: bool = False) -> list[Path]:
    """The XML files of a folder, sorted, leaving out hidden ones (macOS ``._x.xml`` resource forks)."""
    found = folder.rglob("*.xml") if recursive else folder.glob("*.xml")
    return sorted(p for p in found if not is_hidden_below(p, folder) and p.is_file())


def _has_xml(folder: Path, recursive: bool = False) -> bool:
    found = folder.rglob("*.xml") if recursive else folder.glob("*.xml")
    return any(not is_hidden_below(p, folder) for p in found)


def _split_lists(folder: Path) -> tuple[list[Path], list[str]]:
    """The ``ImageSets/Main`` split lists (not the per-class ``<class>_<split>.txt`` ones), and notes."""
    main = folder / "ImageSets" / "Main"
    if not main.is_dir():
        return [], []
    lists = [p for p in sorted(main.glob("*.txt"))
             if not p.name.startswith(".") and not any(p.stem.endswith(f"_{s}") for s in _SPLIT_LIST_NAMES)]
    stems = {p.stem.lower() for p in lists}
    trainval = [p for p in lists if p.stem.lower() == "trainval"]
    if trainval and stems & {"train", "training"}:
        return [p for p in lists if p not in trainval], [f"{trainval[0]} ignored: the train and val lists are used"]
    return lists, []


def find_voc_layout(folder: Path) -> VocLayout | None:
    """The VOC layout of a data set folder (see the module docstring), or None when it is not one.

    Raises:
        InputFileError: an ``Annotations/`` folder of XML files without an image folder beside it.
    """
    annotations = next((folder / n for n in ANNOTATION_FOLDERS if _has_xml(folder / n, recursive=True)), None)
    if annotations is not None:
        images = next((folder / n for n in IMAGE_FOLDERS if (folder / n).is_dir()), None)
        if images is None:
            raise InputFileError(folder, f"has VOC annotations in {annotations.name}/ but no image folder beside it "
                                         f"({' or '.join(n + '/' for n in IMAGE_FOLDERS)})")
        lists, notes = _split_lists(folder)
        if not lists:
            return VocLayout((VocSubset("train", images, annotations),), f"every XML file in {annotations.name}/")
        subsets = [VocSubset("train" if p.stem.lower() == "trainval" else p.stem, images, annotations, p)
                   for p in lists]
        notes += [f"{p} used as the training split" for p in lists if p.stem.lower() == "trainval"]
        return VocLayout(tuple(subsets), notes=tuple(notes))
    beside = [d for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".") and _has_xml(d)]
    if beside:
        return VocLayout(tuple(VocSubset(d.name, d, d) for d in beside))
    if _has_xml(folder):
        return VocLayout((VocSubset("train", folder, folder),), "the images and XML files of the folder")
    return None


# ----------------------------------------------------------------------------------------------- a split's index
def split_xml_files(annotations: Path, image_list: Path | None, beside: bool) -> tuple[list[Path], list[str]]:
    """A split's XML files, and one problem line per listed image without one (or an unreadable list).

    Args:
        annotations: the XML folder.
        image_list: the ``ImageSets/Main`` list of image ids (``<id>`` -> ``annotations/<id>.xml``); None: every XML
            file of the folder (and its subfolders, unless the images are ``beside`` the XML files).
    """
    if image_list is None:
        return _xml_in(annotations, recursive=not beside), []
    try:
        lines = image_list.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        return [], [f"{image_list}: cannot read the image list ({e})"]
    files, problems = [], []
    for number, line in enumerate(lines, start=1):
        image_id = line.split()[0] if line.split() else ""  # per-class lists add a column: "000005 -1"
        if not image_id:
            continue
        path = annotations / f"{image_id}.xml"
        if path.is_file():
            files.append(path)
        else:
            problems.append(f"{image_list}:{number}: image '{image_id}' has no annotation file {path}")
    if not files and not problems:
        problems.append(f"{image_list}: lists no images")
    return files, problems


def _image_candidates(images: Path, xml_name: Path, filename: str | None) -> list[Path]:
    """Where the image of an XML file may be, most trusted first (see the module docstring)."""
    candidates = []
    if filename:
        written = filename.replace("\\", "/")
        if not (Path(written).is_absolute() or PureWindowsPath(filename).drive):  # the annotator's machine's path
            candidates.append(images / written)
        candidates.append(images / PureWindowsPath(filename).name)
    stems = [xml_name] + ([xml_name.parent / Path(PureWindowsPath(filename).name).stem] if filename else [])
    for stem in stems:
        candidates += [images / f"{stem}{suffix}" for suffix in sorted(IMAGE_EXTENSIONS)]
        candidates += [images / f"{stem}{suffix.upper()}" for suffix in sorted(IMAGE_EXTENSIONS)]
    return candidates


def _find_image(images: Path, xml_name: Path, filename: str | None) -> Path | None:
    return next((path for path in _image_candidates(images, xml_name, filename) if path.is_file()), None)


def _relative(path: Path, root: Path | None) -> str:
    try:
        return os.path.relpath(path, root) if root is not None else str(path)
    except ValueError:  # another drive on Windows
        return str(path)


def load_voc_index(
    images: Path,
    annotations: Path,
    image_list: Path | None,
    categories: CategoryTable,
    *,
    root: Path | None = None,
    files: VocFiles | None = None,
) -> DetectionIndex:
    """Parse one VOC split, applying the repair rules of :mod:`dfine.data.index`; problems are collected in
    ``index.problems``, not raised.

    Args:
        images: the image folder (``<filename>`` entries are relative to it).
        annotations: the XML folder; the same as ``images`` when the XML files are beside their images.
        image_list: the split's ``ImageSets/Main`` list, or None for every XML file of ``annotations``.
        categories: the class table (the class list file's, or the names found in every split).
        root: the data set folder; ground-truth ``file_name`` entries are relative to it.
        files: the parsed-file cache shared by the splits of a data set.
    """
    files = files or VocFiles()
    beside = images.resolve() == annotations.resolve()
    xml_files, list_problems = split_xml_files(annotations, image_list, beside)
    builder = IndexBuilder(image_list or annotations, categories)
    builder.problems.extend(list_problems)
    id_of = dict(zip(categories.names, categories.ids, strict=True))
    used: set[Path] = set()
    for image_id, xml_file in enumerate(xml_files):
        parsed = files.read(xml_file)
        builder.problems.extend(parsed.problems)
        if not parsed.usable:
            continue
        xml_name = xml_file.relative_to(annotations).with_suffix("")
        path = _find_image(images, xml_name, parsed.filename)
        if path is None:
            expected = images / (parsed.filename or f"{xml_name}.jpg")
            builder.problem(str(xml_file), f"its image {expected} is missing")
            continue
        if parsed.filename and path.name not in (parsed.filename, PureWindowsPath(parsed.filename).name):
            builder.repairs.add("image found by the XML file's name (<filename> names no file)", str(xml_file))
        width_height = parsed.size
        if width_height is None:
            try:
                info = probe_image(path)
            except InputFileError as e:
                builder.problem(str(e.path), f"{e.problem} (the image of {xml_file})")
                continue
            width_height = (info.width, info.height)
            builder.repairs.add("missing image size read from the image file", str(xml_file))
        used.add(path)
        builder.add_image(image_id, path, _relative(path, root), *width_height)
        for number, obj in parsed.objects:
            where = f"{xml_file} object {number}"
            if obj.name not in id_of:
                known = ", ".join(categories.names[:10]) + (", ..." if len(categories.names) > 10 else "")
                builder.problem(where, f"class '{obj.name}' is not in the class list ({known})")
                continue
            builder.add_box(image_id, id_of[obj.name], obj.box, where, iscrowd=obj.difficult)
    if beside:
        # LabelImg saves no XML for an image it was never given boxes for: say so rather than drop it unseen
        for path in sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p not in used
                           and not p.name.startswith(".")):
            builder.repairs.add("image without an XML file left out", str(path))
    if not xml_files and not list_problems:
        builder.problem(str(annotations), "holds no XML annotation files")
    return builder.build()
