"""From the user's ``--data`` argument to the files of each split: format detection and :class:`DatasetSpec`.

Accepted (first match wins):

a. a data YAML whose ``train`` / ``val`` entries each have ``images`` (folder) and ``annotations`` (COCO JSON),
   relative to ``path:`` or to the YAML's folder;
b. an Ultralytics data YAML (has ``names``; see :mod:`dfine.data.yolo`);
c. a folder holding one of:
   - such a YAML (``data.yaml``, ``dataset.yaml``, or any other single ``*.yaml``);
   - ``train/`` and ``valid/`` (or ``val/``) each with ``_annotations.coco.json`` (Roboflow COCO export);
   - ``annotations/instances_<split>.json`` with images in ``<split>/`` or ``images/<split>/`` (COCO layout,
     e.g. ``instances_train2017.json`` + ``train2017/``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from dfine.data.coco import load_coco_index
from dfine.data.dataset import DetectionDataset, Transforms
from dfine.data.index import CategoryTable, DetectionIndex
from dfine.data.yolo import data_root, load_yolo_index, read_yolo_yaml
from dfine.errors import InputFileError

ACCEPTED_LAYOUTS = (
    "a data YAML with train/val entries each having 'images' and 'annotations' (COCO JSON); "
    "a YOLO data.yaml with 'names' and train/val; "
    "a folder with train/ and valid/ each holding _annotations.coco.json (Roboflow); "
    "a folder with annotations/instances_<split>.json and <split>/ or images/<split>/ image folders (COCO); "
    "a folder with images/<split>, labels/<split> and a data.yaml (YOLO)"
)
_VAL_NAMES = ("val", "valid", "validation")


@dataclass(frozen=True)
class SplitFiles:
    """Where one split's data is.

    Attributes:
        images: COCO: the one folder ``file_name`` entries are relative to; YOLO: image folders / list files.
        annotations: the COCO JSON file; None for YOLO (labels sit next to the images).
    """

    images: tuple[Path, ...]
    annotations: Path | None = None


@dataclass
class DatasetSpec:
    """A resolved data set: its format, where each split is, and (lazily) the parsed splits.

    Parsed splits are cached, so the data set check and the data sets built afterwards share one
    :class:`DetectionIndex` per split (the same repaired annotations).

    Attributes:
        format: ``"coco"`` or ``"yolo"``.
        source: what the user passed as ``--data`` (or the YAML found in that folder).
        splits: split name (``train``, ``val``, maybe ``test``) -> its files.
        root: YOLO: the folder ground-truth file names are relative to.
        yolo_categories: YOLO: the class table from ``data.yaml`` (COCO reads it from the training JSON).
        notes: how paths were interpreted where that was not literal (shown by the data set check).
    """

    format: Literal["coco", "yolo"]
    source: Path
    splits: dict[str, SplitFiles]
    root: Path | None = None
    yolo_categories: CategoryTable | None = None
    notes: list[str] = field(default_factory=list)
    _indexes: dict[str, DetectionIndex] = field(default_factory=dict, repr=False)

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
        """The label table: YOLO's ``names``; COCO's training-split categories (every split uses them)."""
        if self.yolo_categories is not None:
            return self.yolo_categories
        return self.index(self.reference_split).categories

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
            else:
                assert self.yolo_categories is not None
                index = load_yolo_index(
                    files.images, self.yolo_categories, source=self.source, root=self.root, progress=progress
                )
            self._indexes[split] = index
        return self._indexes[split]

    def build(self, split: str, transforms: Transforms | None = None) -> DetectionDataset:
        """The data set of a split.

        Raises:
            InputFileError: no such split.
            DatasetError: the split has annotation problems that cannot be repaired (all listed).
        """
        return DetectionDataset(self.index(split), transforms)


def _load_yaml(path: Path) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise InputFileError(path, f"invalid YAML ({str(e).splitlines()[0]})") from None


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


def _yaml_spec(path: Path) -> DatasetSpec | None:
    data = _load_yaml(path)
    if _is_coco_yaml(data):
        return _coco_yaml_spec(path, data)  # type: ignore[arg-type]
    if isinstance(data, dict) and "names" in data:
        config = read_yolo_yaml(path)
        splits = {split: SplitFiles(sources) for split, sources in config.splits.items()}
        return DatasetSpec("yolo", path, splits, config.root, config.categories, list(config.notes))
    return None


def _folder_spec(folder: Path) -> DatasetSpec | None:
    preferred = [folder / "data.yaml", folder / "dataset.yaml"]
    others = sorted(p for p in (*folder.glob("*.yaml"), *folder.glob("*.yml")) if p not in preferred)
    for candidate in [p for p in preferred if p.is_file()] + others:
        spec = _yaml_spec(candidate)
        if spec is not None:
            return spec
    # Roboflow COCO export: <split>/_annotations.coco.json next to the images.
    roboflow = {}
    for split, names in (("train", ("train",)), ("val", _VAL_NAMES), ("test", ("test",))):
        for name in names:
            json_file = folder / name / "_annotations.coco.json"
            if json_file.is_file():
                roboflow[split] = SplitFiles((json_file.parent,), json_file)
                break
    if roboflow:
        return DatasetSpec("coco", folder, roboflow)
    # COCO layout: annotations/instances_<split>.json with <split>/ or images/<split>/ images.
    coco = {}
    for json_file in sorted((folder / "annotations").glob("instances_*.json")):
        name = json_file.stem[len("instances_") :]
        split_name = next((s for s in ("train", "val", "test") if name.startswith(s)), None)
        image_dir = next((d for d in (folder / name, folder / "images" / name) if d.is_dir()), None)
        if split_name is not None and split_name not in coco and image_dir is not None:
            coco[split_name] = SplitFiles((image_dir,), json_file)
    if coco:
        return DatasetSpec("coco", folder, coco)
    if (folder / "images").is_dir() and (folder / "labels").is_dir():
        raise InputFileError(folder, "looks like a YOLO data set but has no data.yaml with the class 'names'")
    return None


def resolve_dataset(data: str | Path) -> DatasetSpec:
    """Work out the data set format and split files from a ``--data`` argument (see the module docstring).

    Raises:
        InputFileError: the path does not exist, or matches no accepted layout (the message lists them).
    """
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
