"""From the user's ``--data`` argument to the files of each split: format detection and :class:`DatasetSpec`.

Accepted (first match wins):

a. a data YAML whose ``train`` / ``val`` entries each have ``images`` (folder) and ``annotations`` (COCO JSON),
   relative to ``path:`` or to the YAML's folder;
b. an Ultralytics data YAML (has ``names``; see :mod:`dfine.data.yolo`), or one without ``names`` next to a
   ``classes.txt`` / ``obj.names`` class list;
c. a folder holding one of:
   - such a YAML (``data.yaml``, ``dataset.yaml``, or any other single ``*.yaml``);
   - ``train/`` and ``valid/`` (or ``val/``) each with ``_annotations.coco.json`` (Roboflow COCO export);
   - ``annotations/instances_<split>.json`` with images in ``<split>/`` or ``images/<split>/`` (COCO layout,
     e.g. ``instances_train2017.json`` + ``train2017/``; CVAT subsets ``instances_Train.json`` +
     ``images/Train/``); a single ``instances_<anything>.json`` (CVAT's ``instances_default.json``) may have its
     images directly in ``images/``;
   - ``result.json`` + ``images/`` (Label Studio COCO export; one split);
   - ``images/`` + ``labels/`` (with ``<split>`` subfolders, or flat for one split), or CVAT's
     ``obj_<split>_data/``, with a ``classes.txt`` / ``obj.names`` class list (Label Studio, CVAT YOLO 1.1,
     LabelImg);
   - Pascal VOC XML files (see :mod:`dfine.data.voc`): ``Annotations/`` + ``JPEGImages/`` (or ``images/``) with
     the splits in ``ImageSets/Main/<split>.txt`` (devkit, CVAT "PASCAL VOC 1.1", Label Studio); ``<split>/``
     folders of images with their XML files beside them (Roboflow); or one such folder (LabelImg), one split.

Split names are matched case-insensitively: train/training, val/valid/validation, test/testing (a year or number
may follow: ``train2017``). A lone subset with another name (``default``) is the training split, and the data set
then has no validation split. Layouts where two folders or files claim one split, or several claim none, are
refused with a message listing them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dfine.data.coco import load_coco_index
from dfine.data.dataset import DetectionDataset, Transforms
from dfine.data.index import CategoryTable, DetectionIndex
from dfine.data.voc import VocFiles, classes_in_files, find_voc_layout, load_voc_index, read_class_list, split_xml_files
from dfine.data.yolo import data_root, load_yaml, load_yolo_index, read_yolo_yaml, split_entries
from dfine.errors import DFineError, InputFileError

ACCEPTED_LAYOUTS = (
    "a data YAML with train/val entries each having 'images' and 'annotations' (COCO JSON); "
    "a YOLO data.yaml with 'names' and train/val; "
    "a folder with train/ and valid/ each holding _annotations.coco.json (Roboflow); "
    "a folder with annotations/instances_<split>.json and <split>/ or images/<split>/ image folders (COCO, CVAT); "
    "a folder with result.json and images/ (Label Studio COCO); "
    "a folder with images/<split>, labels/<split> and a data.yaml or a classes.txt / obj.names class list (YOLO); "
    "a folder with Annotations/ (VOC XML), JPEGImages/ or images/ and maybe ImageSets/Main/<split>.txt lists "
    "(Pascal VOC, CVAT); a folder with <split>/ folders, or itself, holding images beside their VOC XML files "
    "(Roboflow, LabelImg)"
)
_SPLIT_NAME = re.compile(r"(train(?:ing)?|val(?:id|idation)?|test(?:ing)?)(?:[-_ ]?\d+)?", re.IGNORECASE)
_CLASS_LISTS = ("classes.txt", "obj.names")
_NO_VAL = "there is no validation split, so training runs without evaluation"


@dataclass(frozen=True)
class SplitFiles:
    """Where one split's data is.

    Attributes:
        images: COCO: the one folder ``file_name`` entries are relative to; YOLO: image folders / list files; VOC:
            the one image folder.
        annotations: the COCO JSON file; VOC: the folder of XML files (the image folder when they are side by
            side); None for YOLO (labels sit next to the images).
        image_list: VOC: the ``ImageSets/Main/<split>.txt`` list of the split's image ids; None: every XML file.
    """

    images: tuple[Path, ...]
    annotations: Path | None = None
    image_list: Path | None = None


@dataclass
class DatasetSpec:
    """A resolved data set: its format, where each split is, and (lazily) the parsed splits.

    Parsed splits are cached, so the data set check and the data sets built afterwards share one
    :class:`DetectionIndex` per split (the same repaired annotations).

    Attributes:
        format: ``"coco"``, ``"yolo"`` or ``"voc"``.
        source: what the user passed as ``--data`` (or the YAML found in that folder).
        splits: split name (``train``, ``val``, maybe ``test``) -> its files.
        root: YOLO, VOC: the folder ground-truth file names are relative to.
        class_table: YOLO: the class table from ``data.yaml`` or the class list; VOC: the class list's, else set on
            first use to the names found in the XML files of every split; COCO reads it from the training JSON.
        notes: how paths were interpreted where that was not literal (shown by the data set check).
    """

    format: Literal["coco", "yolo", "voc"]
    source: Path
    splits: dict[str, SplitFiles]
    root: Path | None = None
    class_table: CategoryTable | None = None
    notes: list[str] = field(default_factory=list)
    _indexes: dict[str, DetectionIndex] = field(default_factory=dict, repr=False)
    _voc_files: VocFiles = field(default_factory=VocFiles, repr=False)

    def _require(self, split: str) -> SplitFiles:
        if split not in self.splits:
            raise InputFileError(self.source, f"has no '{split}' split (found: {', '.join(self.splits) or 'none'})")
        return self.splits[split]

    @property
    def reference_split(self) -> str:
        """The split whose COCO categories every split uses (``train`` when there is one)."""
        return "train" if "train" in self.splits else next(iter(self.splits))

    @property
    def categories(self) -> CategoryTable:
        """The label table: YOLO's ``names``; VOC's class list or names; COCO's training-split categories (every
        split uses them)."""
        if self.class_table is None and self.format == "voc":
            xml_files = [path for files in self.splits.values() for path in self._xml_files(files)]
            self.class_table = classes_in_files(xml_files, self._voc_files)
        if self.class_table is not None:
            return self.class_table
        return self.index(self.reference_split).categories

    def _xml_files(self, files: SplitFiles) -> list[Path]:
        assert files.annotations is not None
        beside = files.annotations.resolve() == files.images[0].resolve()
        return split_xml_files(files.annotations, files.image_list, beside)[0]

    @property
    def names(self) -> list[str]:
        """Class name of each contiguous label."""
        return list(self.categories.names)

    @property
    def category_ids(self) -> list[int]:
        """Original category id of each contiguous label."""
        return list(self.categories.ids)

    def index(self, split: str, *, progress: bool = False) -> DetectionIndex:
        """The parsed, repaired split (cached); problems are listed in it, not raised."""
        if split not in self._indexes:
            files = self._require(split)
            if self.format == "coco":
                assert files.annotations is not None
                # Every split uses the training categories, unless those could not be read at all.
                own = split == self.reference_split or not self.categories.ids
                categories = None if own else self.categories
                index = load_coco_index(files.annotations, files.images[0], categories=categories)
            elif self.format == "voc":
                assert files.annotations is not None
                index = load_voc_index(files.images[0], files.annotations, files.image_list, self.categories,
                                       root=self.root, files=self._voc_files)
            else:
                assert self.class_table is not None
                index = load_yolo_index(
                    files.images, self.class_table, source=self.source, root=self.root, progress=progress
                )
            self._indexes[split] = index
        return self._indexes[split]

    def build(self, split: str, transforms: Transforms | None = None, *, masks: bool = False) -> DetectionDataset:
        """The data set of a split; ``masks=True`` serves the objects' instance masks too (segmentation).

        Raises:
            InputFileError: no such split.
            DatasetError: the split has annotation problems that cannot be repaired (all listed), or, with
                ``masks``, objects without a usable mask.
        """
        return DetectionDataset(self.index(split), transforms, masks=masks)


def _is_coco_yaml(data: object) -> bool:
    return isinstance(data, dict) and any(
        isinstance(data.get(s), dict) and "annotations" in data[s] for s in ("train", "val")
    )


def _coco_yaml_spec(path: Path, data: dict) -> DatasetSpec:
    root = data_root(data, path)
    splits = {}
    for split in ("train", "val", "test"):
        entry = data.get(split)
        if entry is None:
            continue
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("images"), str)
            or not isinstance(entry.get("annotations"), str)
        ):
            raise InputFileError(path, f"'{split}' needs 'images' (a folder) and 'annotations' (a COCO JSON file)")
        splits[split] = SplitFiles((root / entry["images"],), root / entry["annotations"])
    return DatasetSpec("coco", path, splits)


def _is_nameless_yolo_yaml(data: object) -> bool:
    # LabelImg / CVAT / hand-written YAMLs give the splits but keep the class names in a separate list file.
    splits = (data.get(split) for split in ("train", "val")) if isinstance(data, dict) else ()
    return isinstance(data, dict) and "names" not in data and any(isinstance(s, str | list) for s in splits)


def _yaml_spec(path: Path) -> DatasetSpec | None:
    data = load_yaml(path)
    if _is_coco_yaml(data):
        return _coco_yaml_spec(path, data)  # type: ignore[arg-type]
    if isinstance(data, dict) and "names" in data:
        config = read_yolo_yaml(path)
        splits = {split: SplitFiles(sources) for split, sources in config.splits.items()}
        return DatasetSpec("yolo", path, splits, config.root, config.categories, list(config.notes))
    if _is_nameless_yolo_yaml(data):
        return _nameless_yolo_yaml_spec(path, data)  # type: ignore[arg-type]
    return None


def _split_of(name: str) -> str | None:
    """``train`` / ``val`` / ``test`` for a subset name (``Train``, ``training``, ``valid``, ``val2017``, ...)."""
    match = _SPLIT_NAME.fullmatch(name)
    if match is None:
        return None
    word = match.group(1).lower()
    return "train" if word.startswith("train") else "val" if word.startswith("val") else "test"


def _assign_splits(
    folder: Path, found: list[tuple[str, SplitFiles]], what: str
) -> tuple[dict[str, SplitFiles], list[str]]:
    """Map ``(subset name, files)`` pairs to splits, refusing what is ambiguous.

    A lone subset with another name (CVAT's ``default``) is the training split. Several, none with a split name,
    or two with the same one, could be meant either way: the user must say (a data YAML).

    Returns:
        The splits, and notes on how names were interpreted.
    """
    claims: dict[str, list[tuple[str, SplitFiles]]] = {}
    for name, files in found:
        claims.setdefault(_split_of(name) or "", []).append((name, files))
    for split, names in claims.items():
        if split and len(names) > 1:
            listed = ", ".join(n for n, _ in names)
            raise InputFileError(folder, f"ambiguous {what}: {listed} all look like the '{split}' split; "
                                         "write a data YAML naming the ones to use")
    unnamed = [name for name, _ in claims.pop("", [])]
    if not claims and len(unnamed) == 1:
        splits = {"train": found[0][1]}
        return splits, [f"'{unnamed[0]}' is not a train/val/test name: used as the training split ({_NO_VAL})"]
    if not claims and unnamed:
        raise InputFileError(folder, f"ambiguous {what}: {', '.join(unnamed)}; none is named train/training, "
                                     "val/valid/validation or test/testing: rename them or write a data YAML")
    splits = {split: claims[split][0][1] for split in ("train", "val", "test") if split in claims}
    notes = [f"'{name}' ignored: not a train/val/test name" for name in unnamed]
    return splits, notes


def _spec(
    format: Literal["coco", "yolo", "voc"],
    folder: Path,
    found: list[tuple[str, SplitFiles]],
    what: str,
    notes: list[str] | None = None,
    categories: CategoryTable | None = None,
) -> DatasetSpec:
    splits, split_notes = _assign_splits(folder, found, what)
    root = folder if format in ("yolo", "voc") else None
    return DatasetSpec(format, folder, splits, root, categories, [*(notes or []), *split_notes])


def _roboflow_spec(folder: Path) -> DatasetSpec | None:
    # Roboflow COCO export: <split>/_annotations.coco.json next to the images.
    jsons = sorted(d / "_annotations.coco.json" for d in folder.iterdir() if d.is_dir())
    found = [(j.parent.name, SplitFiles((j.parent,), j)) for j in jsons if j.is_file()]
    return _spec("coco", folder, found, "Roboflow COCO folders") if found else None


def _coco_folder_spec(folder: Path) -> DatasetSpec | None:
    # COCO layout: annotations/instances_<split>.json with <split>/ or images/<split>/ images. CVAT names subsets as
    # the user typed them, and its one-subset export ("default") may put the images directly in images/.
    files = sorted((folder / "annotations").glob("instances_*.json"))
    found, missing = [], []
    for json_file in files:
        name = json_file.stem[len("instances_") :]
        candidates = [folder / name, folder / "images" / name] + ([folder / "images"] if len(files) == 1 else [])
        image_dir = next((d for d in candidates if d.is_dir()), None)
        if image_dir is None:
            missing.append(f"{json_file.name} (no {name}/ or images/{name}/ image folder)")
        else:
            found.append((name, SplitFiles((image_dir,), json_file)))
    if files and not found:
        raise InputFileError(folder / "annotations", f"no image folder found for {', '.join(missing)}")
    notes = [f"annotations/{line} ignored" for line in missing]
    return _spec("coco", folder, found, "COCO annotation files", notes) if found else None


def _label_studio_image_root(folder: Path, result: Path) -> Path:
    # Label Studio writes file names relative to the export folder ("images/x.jpg"), but older versions wrote bare
    # names. The first file name (near the start of the file: no need to parse all of it) tells which.
    with open(result, encoding="utf-8-sig", errors="replace") as f:
        head = f.read(1 << 20)
    match = re.search(r'"file_name"\s*:\s*("(?:[^"\\]|\\.)*")', head)
    try:
        name = json.loads(match.group(1)) if match else ""
    except ValueError:  # an odd escape: the full parse later reports the file
        name = ""
    if name and not (folder / name).is_file() and (folder / "images" / name).is_file():
        return folder / "images"
    return folder


def _label_studio_spec(folder: Path) -> DatasetSpec | None:
    result = folder / "result.json"
    if not (result.is_file() and (folder / "images").is_dir()):
        return None
    files = SplitFiles((_label_studio_image_root(folder, result),), result)
    return DatasetSpec("coco", folder, {"train": files}, notes=[f"result.json used as the training split ({_NO_VAL})"])


def _class_list_file(folder: Path) -> Path | None:
    """The ``classes.txt`` / ``obj.names`` class list (LabelImg also puts one in ``labels/``); None if none."""
    found = [d / n for d in (folder, folder / "labels") for n in _CLASS_LISTS if (d / n).is_file()]
    if len({tuple(_class_names(p)) for p in found}) > 1:
        raise InputFileError(folder, f"class lists disagree: {', '.join(str(p) for p in found)}; keep one")
    return found[0] if found else None


def _class_names(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # Windows tools start files with a byte-order mark
    except (OSError, UnicodeDecodeError) as e:
        raise InputFileError(path, f"cannot read the class list ({e})") from None
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _read_class_list(path: Path) -> CategoryTable:
    """Line i is the name of class i (the YOLO label files' first number)."""
    names = _class_names(path)
    if not names:
        raise InputFileError(path, "the class list is empty: one class name per line is needed")
    if "" in names:
        raise InputFileError(path, f"line {names.index('') + 1} is empty: line i must be the name of class i")
    return CategoryTable(tuple(range(len(names))), tuple(names))


def _nameless_yolo_yaml_spec(path: Path, data: dict) -> DatasetSpec:
    class_list = _class_list_file(path.parent)
    if class_list is None:
        raise InputFileError(path, f"has no class 'names' and there is no {' or '.join(_CLASS_LISTS)} class list "
                                   "beside it: add 'names: [first class, second class, ...]'")
    root = data_root(data, path)
    splits = {split: SplitFiles(tuple(root / e for e in entries))
              for split, entries in split_entries(data, path).items()}
    notes = [f"class names read from {class_list}"]
    return DatasetSpec("yolo", path, splits, root, _read_class_list(class_list), notes)


def _yolo_folder_spec(folder: Path) -> DatasetSpec | None:
    # YOLO without a data.yaml: images/<split>/ + labels/<split>/ (flat images/ + labels/ from Label Studio), or
    # CVAT YOLO 1.1's obj_<split>_data/ with labels beside the images; the class list is a separate file.
    images, darknet = folder / "images", sorted(d for d in folder.glob("obj_*_data") if d.is_dir())
    if not ((images.is_dir() and (folder / "labels").is_dir()) or darknet):
        return None
    class_list = _class_list_file(folder)
    if class_list is None:
        raise InputFileError(folder, "looks like a YOLO data set but has no data.yaml with the class 'names' and "
                                     f"no {' or '.join(_CLASS_LISTS)} class list")
    notes = [f"class names read from {class_list}"]
    categories = _read_class_list(class_list)
    if darknet:
        found = [(d.name[len("obj_") : -len("_data")], SplitFiles((d,))) for d in darknet]
    elif subfolders := sorted(d for d in images.iterdir() if d.is_dir()):
        found = [(d.name, SplitFiles((d,))) for d in subfolders]
    else:
        found = [("images", SplitFiles((images,)))]  # flat: one split
    return _spec("yolo", folder, found, "image folders", notes, categories)


def _voc_folder_spec(folder: Path) -> DatasetSpec | None:
    layout = find_voc_layout(folder)
    if layout is None:
        return None
    class_list = read_class_list(folder)
    notes = [f"class names read from {class_list[1]}"] if class_list else []
    categories = class_list[0] if class_list else None
    found = [(s.name, SplitFiles((s.images,), s.annotations, s.image_list)) for s in layout.subsets]
    if layout.single is not None:
        notes += [*layout.notes, f"{layout.single} used as the training split ({_NO_VAL})"]
        return DatasetSpec("voc", folder, {"train": found[0][1]}, folder, categories, notes)
    return _spec("voc", folder, found, "VOC subsets", [*notes, *layout.notes], categories)


def _folder_spec(folder: Path) -> DatasetSpec | None:
    preferred = [folder / "data.yaml", folder / "dataset.yaml"]
    others = sorted(p for p in (*folder.glob("*.yaml"), *folder.glob("*.yml")) if p not in preferred)
    for candidate in [p for p in preferred if p.is_file()] + others:
        spec = _yaml_spec(candidate)
        if spec is not None:
            return spec
    for layout in (_roboflow_spec, _coco_folder_spec, _label_studio_spec, _yolo_folder_spec, _voc_folder_spec):
        spec = layout(folder)
        if spec is not None:
            return spec
    return None


def resolve_dataset(data: str | Path) -> DatasetSpec:
    """Work out the data set format and split files from a ``--data`` argument (see the module docstring).

    Raises:
        InputFileError: the path does not exist, or matches no accepted layout (the message lists them).
    """
    if isinstance(data, str) and not data.strip():  # Path("") is the working folder, which was not meant
        raise DFineError("the data set path is an empty string: give a data YAML or data set folder")
    path = Path(data).expanduser()
    if not path.exists():
        raise InputFileError(path, "data set path does not exist")
    if path.is_dir():
        spec = _folder_spec(path)
    elif path.suffix.lower() in (".yaml", ".yml"):
        spec = _yaml_spec(path)
    else:
        spec = None
    if spec is None or not spec.splits:
        raise InputFileError(path, f"no data set layout recognised; accepted: {ACCEPTED_LAYOUTS}")
    return spec
