"""The in-memory form of an annotated split, and the one place where annotation repair rules live.

The file formats (COCO-JSON in :mod:`dfine.data.coco`, YOLO-txt in :mod:`dfine.data.yolo`, Pascal VOC XML in
:mod:`dfine.data.voc`) are parsed into the same :class:`DetectionIndex`: a list of :class:`ImageRecord` (absolute
``xyxy`` boxes, contiguous labels) plus the category table, the repairs made and the problems that could not be
repaired. The parsers only read files; every box goes through :meth:`IndexBuilder.add_box`, so the data sets, the
evaluation ground truth and the data set check all see the same repaired annotations.

Rules (in order), for each box:

- category not in the table -> problem (cannot guess the class);
- a coordinate that is NaN or infinite -> problem;
- negative width or height -> problem: like a NaN it is a malformed annotation (an exporter that swapped corners,
  a wrong format), and the object it stands for would otherwise be lost without a word;
- zero width or height -> dropped (repair): it carries no object;
- no overlap with the image at all -> problem: usually a wrong coordinate convention (pixels vs normalised,
  ``xywh`` vs ``xyxy``) that clipping would silently turn into garbage;
- partly outside the image -> clipped to the image; a repair when a side lies more than half a pixel outside
  (:data:`CLIP_TOLERANCE_PX`), silently otherwise: normalised YOLO coordinates written with a few decimals put
  edge-touching boxes a hair outside the image (``-0.00005`` px), and reporting those would flag every data set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dfine.errors import DatasetError

# How far (pixels) a box side may lie outside its image and be clipped without a repair note. Half a pixel: the
# clipped box covers the same pixels as the written one, whatever the image size, and it is well above the
# rounding of normalised coordinates (6 decimals: 0.002 px on a 4000 px image), while a drawn or mis-exported
# overshoot is usually a pixel or more.
CLIP_TOLERANCE_PX = 0.5


@dataclass(frozen=True)
class CategoryTable:
    """Contiguous labels ``0..C-1`` for the data set's category ids, in sorted id order.

    Attributes:
        ids: the original category (COCO) or class (YOLO) ids, sorted; ``ids[label]`` maps a label back.
        names: the class names, ``names[label]``.
    """

    ids: tuple[int, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if list(self.ids) != sorted(set(self.ids)) or len(self.ids) != len(self.names):
            raise ValueError("category ids must be unique and sorted, one name per id")

    @property
    def label_of(self) -> dict[int, int]:
        """Original id -> contiguous label."""
        return {category_id: label for label, category_id in enumerate(self.ids)}

    @property
    def is_contiguous(self) -> bool:
        """Whether the original ids already are ``0..C-1`` (no remapping needed)."""
        return list(self.ids) == list(range(len(self.ids)))


@dataclass
class ImageRecord:
    """One image and its (repaired) annotations.

    Attributes:
        image_id: the data set's image id (COCO ``id``; YOLO: position in the sorted image list).
        path: the image file.
        file_name: the name written into the evaluation ground truth (relative path as in the annotation file).
        width, height: the size the annotations refer to (after EXIF orientation, see :mod:`dfine.data.images`).
        boxes: (n, 4) float64 absolute ``xyxy`` pixels, clipped to the image.
        labels: (n,) int64 contiguous labels.
        iscrowd: (n,) bool; crowd regions are evaluation ground truth but never training targets.
        areas: (n,) float64; the annotation file's ``area`` when it had one, else the box area.
        segmentations: None when the split has no instance masks at all; else one entry per box: its segmentation
            in absolute pixels (polygons or a COCO RLE, :mod:`dfine.data.polygons`), or None for a box without one.
    """

    image_id: int
    path: Path
    file_name: str
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    iscrowd: np.ndarray
    areas: np.ndarray
    segmentations: list[Any] | None = None


@dataclass
class RepairLog:
    """Counts of each kind of repair with a few examples of where it happened."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, what: str, where: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
        shown = self.examples.setdefault(what, [])
        if len(shown) < 3:
            shown.append(where)

    def lines(self) -> list[str]:
        """One line per kind of repair: ``"<count> x <what> (e.g. <where>, ...)"``."""
        return [f"{n} x {what} (e.g. {'; '.join(self.examples[what])})" for what, n in self.counts.items()]


@dataclass
class DetectionIndex:
    """A parsed, repaired split: what a data set serves and what the evaluation ground truth is made of.

    Attributes:
        source: the annotation file (COCO) or data YAML / image list (YOLO) it came from.
        categories: the contiguous label table.
        records: one per usable image, in a fixed order (the data set's index order).
        repairs: what was changed to make the annotations usable (nothing is written to disk).
        problems: one line per problem that could not be repaired, each naming its file.
        size_problems: the lines of ``problems`` that follow from an image's annotated size (boxes completely
            outside it), by image id: when the image file has another size, that is the one problem to report.
        mask_issues: what stops the split's instance masks from being trained on (objects without a mask in a split
            that has masks, unreadable or degenerate segmentations): problems for segmentation only, nothing for
            detection (:meth:`raise_if_mask_issues`).
    """

    source: Path
    categories: CategoryTable
    records: list[ImageRecord]
    repairs: RepairLog = field(default_factory=RepairLog)
    problems: list[str] = field(default_factory=list)
    size_problems: dict[int, list[str]] = field(default_factory=dict)
    mask_issues: RepairLog = field(default_factory=RepairLog)

    @property
    def has_masks(self) -> bool:
        """Whether the split has instance masks (some object has a polygon or an RLE mask)."""
        return any(record.segmentations is not None for record in self.records)

    def mask_problems(self) -> list[str]:
        """One line per kind of :attr:`mask_issues`, or the lack of any mask: why instance segmentation cannot
        train or be evaluated on this split (empty when it can)."""
        if not self.has_masks and any(len(record.boxes) for record in self.records):
            return [(f"{self.source}: no object has a polygon or mask: instance segmentation needs them (COCO "
                     "'segmentation', or YOLO lines 'class x1 y1 x2 y2 x3 y3 ...')")]
        return [f"{self.source}: {line}" for line in self.mask_issues.lines()]

    def raise_if_mask_issues(self) -> DetectionIndex:
        """Raise :class:`DatasetError` listing :meth:`mask_problems`; return ``self`` when there is none."""
        problems = self.mask_problems()
        if problems:
            raise DatasetError(f"{self.source}: the instance masks cannot be trained on", problems)
        return self

    def raise_if_problems(self) -> DetectionIndex:
        """Raise :class:`DatasetError` listing every problem; return ``self`` when there is none."""
        if self.problems:
            raise DatasetError(
                f"{self.source}: {len(self.problems)} problem(s) in the annotations that cannot be repaired "
                "automatically",
                self.problems,
            )
        return self


def _overshoot(box_xyxy: tuple[float, float, float, float], width: int, height: int) -> float:
    """How far (pixels) the side of the box furthest outside a ``width`` x ``height`` image lies outside it."""
    x1, y1, x2, y2 = box_xyxy
    return max(-x1, -y1, x2 - width, y2 - height, 0.0)


class IndexBuilder:
    """Collects images and boxes from a parser and applies the repair rules (see the module docstring).

    Args:
        source: the file being parsed, for messages.
        categories: the label table; boxes are given with original category ids.
    """

    def __init__(self, source: Path, categories: CategoryTable) -> None:
        self.source = source
        self.categories = categories
        self.repairs = RepairLog()
        self.problems: list[str] = []
        self.size_problems: dict[int, list[str]] = {}
        self._label_of = categories.label_of
        self._images: dict[int, tuple[Path, str, int, int]] = {}  # id -> (path, file_name, width, height)
        # per image id: one (x1, y1, x2, y2, label, crowd, area) row per box
        self._rows: dict[int, list[tuple[float, float, float, float, int, bool, float]]] = {}
        self._segments: dict[int, list[Any]] = {}  # per image id: each row's segmentation or None
        self._has_segments = False
        self.mask_issues = RepairLog()
        self._box_only = RepairLog()  # objects without a segmentation: an issue only if others have one

    def problem(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}")

    def has_image(self, image_id: int) -> bool:
        return image_id in self._images

    def add_image(self, image_id: int, path: Path, file_name: str, width: int, height: int) -> None:
        """Register an image; boxes are added to it with :meth:`add_box`."""
        self._images[image_id] = (path, file_name, width, height)
        self._rows[image_id] = []
        self._segments[image_id] = []

    def mask_issue(self, what: str, where: str) -> None:
        """Note something that stops an object's mask from being used (see :attr:`DetectionIndex.mask_issues`)."""
        self.mask_issues.add(what, where)

    def add_box(
        self,
        image_id: int,
        category_id: int,
        box_xyxy: tuple[float, float, float, float],
        where: str,
        *,
        iscrowd: bool = False,
        area: float | None = None,
        segmentation: Any = None,
        mask_noted: bool = False,
    ) -> None:
        """Add one box in absolute pixels to a registered image, repairing or rejecting it.

        Args:
            image_id: an id given to :meth:`add_image` before.
            category_id: the original (file) category id.
            box_xyxy: ``(x1, y1, x2, y2)`` absolute pixels, as read from the file.
            where: file and annotation id / line, for messages.
            iscrowd: a COCO crowd region.
            area: the file's ``area`` (kept for evaluation), or None to use the box area.
            segmentation: the object's polygons or RLE mask in absolute pixels, or None (a box only); it follows
                its box (dropped with it).
            mask_noted: the object's segmentation was unusable and :meth:`mask_issue` said why: its lack of one
                is not noted again.
        """
        image = self._images.get(image_id)
        if image is None:
            self.problem(where, f"image_id {image_id} is not one of the file's images")
            return
        label = self._label_of.get(category_id)
        if label is None:
            ids = self.categories.ids
            known = ", ".join(str(i) for i in ids[:10]) + (", ..." if len(ids) > 10 else "")
            self.problem(where, f"category/class id {category_id} does not exist (known ids: {known})")
            return
        x1, y1, x2, y2 = box_xyxy
        if not all(math.isfinite(v) for v in box_xyxy):
            self.problem(where, f"box {list(box_xyxy)} has a NaN or infinite coordinate")
            return
        if x2 < x1 or y2 < y1:
            sizes = [f"{name} ({size:g})" for name, size in (("width", x2 - x1), ("height", y2 - y1)) if size < 0]
            self.problem(where, f"box xyxy ({x1:g}, {y1:g}, {x2:g}, {y2:g}) has a negative {' and '.join(sizes)}")
            return
        if x2 == x1 or y2 == y1:
            self.repairs.add("zero-area box dropped", where)
            return
        w, h = image[2], image[3]
        if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
            self.problem(
                where,
                f"box xyxy ({x1:g}, {y1:g}, {x2:g}, {y2:g}) lies completely outside the {w}x{h} image",
            )
            self.size_problems.setdefault(image_id, []).append(self.problems[-1])
            return
        clipped = (max(x1, 0.0), max(y1, 0.0), min(x2, float(w)), min(y2, float(h)))
        if _overshoot(box_xyxy, w, h) > CLIP_TOLERANCE_PX:
            self.repairs.add("box clipped to its image", where)
        box_area = (clipped[2] - clipped[0]) * (clipped[3] - clipped[1])
        self._rows[image_id].append((*clipped, label, bool(iscrowd), float(area) if area is not None else box_area))
        self._segments[image_id].append(segmentation)
        if segmentation is not None:
            self._has_segments = True
        elif not iscrowd and not mask_noted:
            # (a crowd region needs no mask: it is never trained on, and its box serves evaluation)
            self._box_only.add("objects with a box but no polygon or mask, in a data set whose other objects have "
                               "one (segmentation needs a mask for every object)", where)

    def build(self) -> DetectionIndex:
        """The finished index; records keep the order in which images were added."""
        records = []
        for image_id, (path, file_name, width, height) in self._images.items():
            rows = np.asarray(self._rows[image_id], dtype=np.float64).reshape(-1, 7)
            boxes, labels, crowd, areas = rows[:, :4].copy(), rows[:, 4].astype(np.int64), rows[:, 5] > 0, rows[:, 6]
            segmentations = self._segments[image_id] if self._has_segments else None
            records.append(ImageRecord(image_id, path, file_name, width, height, boxes, labels, crowd, areas.copy(),
                                       segmentations))
        mask_issues = self.mask_issues
        if self._has_segments:
            for what, count in self._box_only.counts.items():
                mask_issues.counts[what] = mask_issues.counts.get(what, 0) + count
                mask_issues.examples.setdefault(what, []).extend(self._box_only.examples[what])
        return DetectionIndex(self.source, self.categories, records, self.repairs, self.problems, self.size_problems,
                              mask_issues)
