"""COCO-JSON annotations: parsing into a :class:`DetectionIndex`, and the :class:`CocoDetection` data set.

Any category ids work (1-based, with gaps, arbitrary): they map to contiguous labels ``0..C-1`` in sorted id order,
which fixes the original's most common custom-data failure (raw ids used as label indices, its issues #89,
#10).
Roboflow exports add a category that is only the ``supercategory`` of the real ones and is never used; it is
dropped, otherwise it would become an extra, never-seen class 0.
"""

from __future__ import annotations

import json
import math
from pathlib import Path, PureWindowsPath
from typing import Any

from dfine.data.dataset import DetectionDataset, Transforms
from dfine.data.images import note_missing_folder, probe_image
from dfine.data.index import CategoryTable, DetectionIndex, IndexBuilder, RepairLog
from dfine.data.masks import BoxXYXY, SegmentationError, rle_size, segmentation_box
from dfine.data.polygons import MIN_POLYGON_POINTS
from dfine.errors import InputFileError


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:  # a JSON integer beyond the float range: as infinite, which the box checks report
        return math.inf if value > 0 else -math.inf


def _as_crowd(value: Any) -> bool | None:
    """``iscrowd`` as a flag: 0 / 1, also written as a string ("0") or a float by some tools (``bool("0")`` would be
    True, making every box a crowd region); None for anything else. A null counts as 0, like a missing key."""
    if value is None or isinstance(value, bool):
        return bool(value)
    number = int(value) if isinstance(value, str) and value.strip() in ("0", "1") else _as_int(value)
    return bool(number) if number in (0, 1) else None


def _as_bbox(value: Any) -> tuple[float, float, float, float] | None:
    numbers = [_as_number(v) for v in value] if isinstance(value, list) and len(value) == 4 else []
    if len(numbers) != 4 or any(v is None for v in numbers):
        return None
    x, y, w, h = (float(v) for v in numbers if v is not None)
    return x, y, w, h


def _annotation_box(ann: dict[str, Any], image_size: tuple[int, int] | None) -> tuple[BoxXYXY, bool] | str:
    """``(xyxy box, computed from the segmentation?)``, or the problem that leaves the annotation without a box.

    A valid ``bbox`` is always used as is. Polygon-only annotations, RLE-only crowd regions and ``"bbox": []`` next
    to a polygon (segmentation data sets, some exporters) get the box of their ``segmentation``, as YOLO polygons do.

    Args:
        ann: the annotation object.
        image_size: ``(height, width)`` of its image when known, to catch an RLE mask made for another image size.
    """
    bbox = ann.get("bbox")
    xywh = _as_bbox(bbox)
    if xywh is not None:
        x, y, w, h = xywh
        return (x, y, x + w, y + h), False
    segmentation = ann.get("segmentation")
    if bbox not in (None, []) or segmentation is None:
        # a bbox that is there but malformed is not overridden: it is more likely a broken file than a choice
        return f"'bbox' must be 4 numbers [x, y, width, height], got {bbox!r}"
    try:
        box = segmentation_box(segmentation)
        mask_size = rle_size(segmentation)
    except SegmentationError as e:
        return f"no 'bbox', and none can be computed from its 'segmentation': {e}"
    if mask_size is not None and image_size is not None and mask_size != image_size:
        return (
            f"no 'bbox', and its RLE 'segmentation' has size {list(mask_size)} but the image is "
            f"{list(image_size)} ([height, width])"
        )
    return box, True


def _annotation_segmentation(ann: dict[str, Any], image_size: tuple[int, int] | None) -> tuple[Any, str | None]:
    """The annotation's instance mask as kept in the index (polygons or RLE, the file's own objects, not copied),
    and what stops it from being used in full (None when nothing does).

    Only the structure is checked here (cheap even for COCO's 860k annotations, and a detector never needs more):
    polygon parts with fewer than three points or an odd number of coordinates are left out, an RLE mask must
    have the image's size. The coordinates themselves are read when rasterised (:mod:`dfine.data.polygons`).
    """
    segmentation = ann.get("segmentation")
    if segmentation is None or segmentation == [] or segmentation == {}:
        return None, None
    if isinstance(segmentation, dict) and "counts" in segmentation:
        try:
            size = rle_size(segmentation)
        except SegmentationError:
            return None, "RLE 'segmentation' without a valid 'size' [height, width]"
        if image_size is not None and size != image_size:
            return None, "RLE 'segmentation' made for another image size than its image's"
        return segmentation, None
    if not isinstance(segmentation, list):
        return None, "'segmentation' neither polygons nor an RLE object"
    usable = [part for part in segmentation
              if isinstance(part, list) and len(part) >= 2 * MIN_POLYGON_POINTS and len(part) % 2 == 0]
    if len(usable) == len(segmentation):
        return segmentation, None
    reason = f"polygons with fewer than {MIN_POLYGON_POINTS} points or an odd number of coordinates"
    return (usable or None), reason + (" left out" if usable else " only (no mask)")


def _image_file(image_dir: Path, file_name: str) -> tuple[Path, str, str | None]:
    """The image path, the ``file_name`` to keep, and a repair note when ``file_name`` had to be read differently.

    Exports made on Windows write backslashes, which are ordinary file name characters elsewhere: every image would
    be reported missing, so they are read as ``/`` (a file whose name really contains one is still found as
    written). Label Studio writes the server's absolute upload path (``/data/upload/1/x.jpg``) while the export holds
    the file in its image folder: an absolute name (POSIX or Windows) that does not exist is looked up by its base
    name there.
    """
    path = image_dir / file_name
    if path.exists():
        return path, file_name, None
    note = None
    if "\\" in file_name:
        file_name, note = file_name.replace("\\", "/"), "Windows '\\' separators in file_name read as '/'"
        path = image_dir / file_name
    if (Path(file_name).is_absolute() or PureWindowsPath(file_name).drive) and not path.exists():
        base = Path(file_name).name
        for candidate in (image_dir / base, image_dir / "images" / base):
            if candidate.is_file():
                return candidate, candidate.relative_to(image_dir).as_posix(), \
                    "absolute file_name not found, found by its name in the image folder"
    return path, file_name, note


def _failed_index(source: Path, problem: str) -> DetectionIndex:
    return DetectionIndex(source, CategoryTable((), ()), [], RepairLog(), [f"{source}: {problem}"])


def read_coco_json(annotation_file: str | Path) -> dict[str, Any]:
    """Load and shape-check a COCO annotation file.

    Raises:
        InputFileError: missing file, invalid JSON, or no ``images`` / ``annotations`` / ``categories`` lists.
    """
    path = Path(annotation_file)
    if path.is_dir():
        raise InputFileError(path, "is a folder, not a COCO annotation file")
    if not path.is_file():
        raise InputFileError(path, "annotation file is missing")
    try:
        with open(path, encoding="utf-8-sig") as f:  # a byte-order mark is harmless, json.load refuses it
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise InputFileError(path, f"invalid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputFileError(path, f"cannot read the annotation file ({e})") from None
    if not isinstance(data, dict):
        raise InputFileError(path, "not a COCO annotation file: the top level must be an object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise InputFileError(path, f"not a COCO annotation file: '{key}' must be a list")
    if not data["categories"]:
        raise InputFileError(path, "'categories' is empty: at least one category is needed")
    return data


def _category_table(data: dict[str, Any], source: Path, repairs: RepairLog, problems: list[str]) -> CategoryTable:
    names: dict[int, str] = {}
    for i, category in enumerate(data["categories"]):
        category_id = _as_int(category.get("id")) if isinstance(category, dict) else None
        name = category.get("name") if isinstance(category, dict) else None
        if category_id is None or not isinstance(name, str):
            problems.append(f"{source}: categories[{i}] needs an integer 'id' and a string 'name', got {category!r}")
        elif category_id in names and names[category_id] != name:
            problems.append(f"{source}: category id {category_id} is used for both '{names[category_id]}' and '{name}'")
        elif category_id in names:
            repairs.add("repeated category entry ignored", f"{source} category {category_id}")
        else:
            names[category_id] = name
    # The Roboflow placeholder: never used by an annotation, and the supercategory of every other category.
    used = {_as_int(a.get("category_id")) for a in data["annotations"] if isinstance(a, dict)}
    supercategory = {_as_int(c.get("id")): c.get("supercategory") for c in data["categories"] if isinstance(c, dict)}
    for category_id, name in list(names.items()):
        others = [i for i in names if i != category_id]
        if others and category_id not in used and all(supercategory.get(i) == name for i in others):
            del names[category_id]
            repairs.add("unused placeholder category dropped", f"{source} category {category_id} '{name}'")
    ids = sorted(names)
    return CategoryTable(tuple(ids), tuple(names[i] for i in ids))


def load_coco_index(
    annotation_file: str | Path, image_dir: str | Path, *, categories: CategoryTable | None = None
) -> DetectionIndex:
    """Parse a COCO annotation file, applying the repair rules of :mod:`dfine.data.index`.

    Nothing is raised for bad annotations: they are collected in ``index.problems`` so that a check can list all
    of them at once (use :meth:`DetectionIndex.raise_if_problems`).

    Args:
        annotation_file: the COCO JSON file.
        image_dir: the folder that ``file_name`` entries are relative to.
        categories: the label table to use (a validation split takes the training split's); None builds it from
            this file's ``categories``.
    """
    source, image_dir = Path(annotation_file), Path(image_dir)
    try:
        data = read_coco_json(source)
    except InputFileError as e:
        return _failed_index(source, e.problem)
    repairs, problems = RepairLog(), list[str]()
    own = _category_table(data, source, repairs, problems)
    if categories is None:
        categories = own
    else:
        reference_names = dict(zip(categories.ids, categories.names, strict=True))
        for category_id, name in zip(own.ids, own.names, strict=True):
            expected = reference_names.get(category_id)
            if expected is not None and expected != name:
                problems.append(f"{source}: category {category_id} is '{name}' here but '{expected}' in training")
    builder = IndexBuilder(source, categories)
    builder.repairs, builder.problems = repairs, problems

    file_of: dict[int, str] = {}
    size_of: dict[int, tuple[int, int]] = {}  # image id -> (height, width), for RLE segmentations
    for i, image in enumerate(data["images"]):
        image_id = _as_int(image.get("id")) if isinstance(image, dict) else None
        file_name = image.get("file_name") if isinstance(image, dict) else None
        if image_id is None or not isinstance(file_name, str) or not file_name:
            builder.problem(f"{source} images[{i}]", f"needs an integer 'id' and a 'file_name', got {image!r}")
            continue
        path, file_name, note = _image_file(image_dir, file_name)
        if note is not None:
            repairs.add(note, f"{source} image {image_id}")
        if image_id in file_of:
            if file_of[image_id] == file_name:
                repairs.add("repeated image entry ignored", f"{source} image {image_id}")
            else:
                builder.problem(
                    f"{source} image {image_id}", f"id used for both '{file_of[image_id]}' and '{file_name}'"
                )
            continue
        file_of[image_id] = file_name
        width, height = _as_int(image.get("width")), _as_int(image.get("height"))
        if width is None or height is None or width <= 0 or height <= 0:
            # Some exporters omit the size; the boxes still need it for clipping and evaluation.
            try:
                info = probe_image(path)
            except InputFileError as e:
                if not note_missing_folder(problems, path, source):
                    builder.problem(str(e.path), f"{e.problem} (image {image_id} of {source})")
                continue
            width, height = info.width, info.height
            repairs.add("missing image size read from the image file", f"{source} image {image_id}")
        builder.add_image(image_id, path, file_name, width, height)
        size_of[image_id] = (height, width)

    for i, ann in enumerate(data["annotations"]):
        ann_id = ann.get("id", f"#{i}") if isinstance(ann, dict) else f"#{i}"
        where = f"{source} annotation {ann_id}"
        if not isinstance(ann, dict):
            builder.problem(where, f"an annotation must be an object, got {ann!r}")
            continue
        ann_image_id, ann_category_id = _as_int(ann.get("image_id")), _as_int(ann.get("category_id"))
        if ann_image_id is None or ann_category_id is None:
            builder.problem(where, "needs integer 'image_id' and 'category_id'")
            continue
        iscrowd = _as_crowd(ann.get("iscrowd", 0))
        if iscrowd is None:
            builder.problem(where, f"'iscrowd' must be 0 or 1, got {ann['iscrowd']!r}")
            continue
        box = _annotation_box(ann, size_of.get(ann_image_id))
        if isinstance(box, str):
            builder.problem(where, box)
            continue
        if ann_image_id in file_of and not builder.has_image(ann_image_id):
            continue  # its image already has a problem of its own
        xyxy, from_segmentation = box
        if from_segmentation and builder.has_image(ann_image_id):  # else add_box reports the unknown image
            repairs.add("box computed from its segmentation", where)
        area = _as_number(ann.get("area"))
        segmentation, mask_issue = _annotation_segmentation(ann, size_of.get(ann_image_id))
        if mask_issue is not None:
            builder.mask_issue(mask_issue, where)
        builder.add_box(
            ann_image_id,
            ann_category_id,
            xyxy,
            where,
            iscrowd=iscrowd,
            area=area if area is not None and math.isfinite(area) and area > 0 else None,
            segmentation=segmentation,
            mask_noted=mask_issue is not None,
        )
    return builder.build()


class CocoDetection(DetectionDataset):
    """A COCO-JSON data set: images in a folder and one annotation file.

    Args:
        image_dir: the folder ``file_name`` entries are relative to.
        annotation_file: the COCO JSON file.
        transforms: called as ``transforms(image, target)``.
        categories: the label table (for a validation split, the training split's); None uses the file's.

    Raises:
        DatasetError: listing every annotation problem that cannot be repaired.
    """

    def __init__(
        self,
        image_dir: str | Path,
        annotation_file: str | Path,
        transforms: Transforms | None = None,
        *,
        categories: CategoryTable | None = None,
    ) -> None:
        super().__init__(load_coco_index(annotation_file, image_dir, categories=categories), transforms)
