"""The data set check run before training: repair what is safe, list every problem that is not.

Annotation rules live in :mod:`dfine.data.index` and are applied when a split is parsed, so the check reports
exactly the repairs the data sets then use (both come from the same cached :class:`DetectionIndex` of the
:class:`DatasetSpec`). On top of that the check reads every image header: missing, unreadable and truncated files,
and images whose size does not match their annotations, are problems; images annotated on their unrotated pixels
(EXIF) are handled and reported. Nothing on disk is ever modified.

Instance masks (polygons, RLE) are checked when they will be used or when the data set has them: objects without a
mask in a data set with masks (a box-only YOLO line among polygon lines), unreadable or degenerate polygons (fewer
than three points, an odd number of coordinates, no pixel inside the image), polygons reaching outside their image,
and polygons that cross themselves. For segmentation (``masks=True``) the first three are problems; otherwise they
are warnings, and a detector never looks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dfine.data.images import (
    check_decodes,
    note_missing_folder,
    probe_images,
    size_mismatch_message,
    use_exif_orientation,
)
from dfine.data.index import CLIP_TOLERANCE_PX, DetectionIndex, RepairLog
from dfine.data.polygons import crosses_itself, outside_image, polygon_parts
from dfine.data.resolve import DatasetSpec, SplitFiles, resolve_dataset
from dfine.errors import DatasetError, InputFileError


@dataclass(frozen=True)
class SplitSummary:
    """Counts for one split: images, images without objects, boxes (crowd excluded), crowd regions, per class, and
    the boxes (crowd excluded) with an instance mask."""

    images: int
    empty_images: int
    boxes: int
    crowd: int
    boxes_per_class: tuple[int, ...]
    masks: int = 0


@dataclass
class CheckReport:
    """What :func:`check_dataset` found.

    Attributes:
        source: the data set (``--data``).
        format: ``"coco"``, ``"yolo"`` or ``"voc"``.
        class_names, category_ids: the label table (label i is ``class_names[i]``, file id ``category_ids[i]``).
        splits: per-split counts.
        indexes: the checked, repaired splits (the same objects the spec's data sets use).
        repairs: one line per kind of repair per split (applied in memory only).
        warnings: things worth knowing that do not stop training.
        problems: one line per problem that must be fixed, each naming its file; listed once even when several
            splits share the file.
        problem_splits: problem line -> the splits it affects (empty for the data set as a whole).
    """

    source: Path
    format: str
    class_names: list[str]
    category_ids: list[int]
    splits: dict[str, SplitSummary] = field(default_factory=dict)
    indexes: dict[str, DetectionIndex] = field(default_factory=dict)
    repairs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    problem_splits: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def _tagged(self, line: str) -> str:
        # With several splits the file name alone may not say which of them a problem stops.
        splits = self.problem_splits.get(line, ())
        return f"[{', '.join(splits)}] {line}" if splits and len(self.splits) > 1 else line

    def add_problems(self, lines: Sequence[str], split: str | None = None) -> None:
        """Add problem lines, each once: splits sharing an annotation file or image folder find the same ones."""
        for line in lines:
            if line not in self.problem_splits:
                self.problems.append(line)
                self.problem_splits[line] = ()
            if split is not None and split not in self.problem_splits[line]:
                self.problem_splits[line] += (split,)

    def add_warning(self, line: str) -> None:
        if line not in self.warnings:
            self.warnings.append(line)

    def problems_by_split(self) -> str:
        """How many problems each split (or group of splits sharing files) has: ``1 in train and val, 2 in val``."""
        counts = Counter(self.problem_splits.get(line, ()) for line in self.problems)
        return ", ".join(f"{n} in {' and '.join(splits) or 'the data set'}" for splits, n in counts.items())

    def summary(self) -> str:
        """A multi-line, human-readable report."""
        names = ", ".join(f"{i} {n}" for i, n in enumerate(self.class_names[:20]))
        if len(self.class_names) > 20:
            names += f", ... ({len(self.class_names) - 20} more)"
        lines = [f"Data set {self.source} ({self.format}), {len(self.class_names)} classes: {names}"]
        # VOC's difficult objects are crowd regions (not trained on, ignored by AP): named as the files name them
        crowd_kind = "difficult objects (ignored)" if self.format == "voc" else "crowd regions"
        for split, s in self.splits.items():
            crowd = f", {s.crowd} {crowd_kind}" if s.crowd else ""
            masks = f" ({s.masks} with masks)" if s.masks else ""
            lines.append(f"  {split}: {s.images} images ({s.empty_images} without objects), {s.boxes} boxes{masks}"
                         f"{crowd}")
        for title, items in (
            ("Repaired (in memory; files on disk are unchanged)", self.repairs),
            ("Warnings", self.warnings),
            ("Problems (must be fixed)", [self._tagged(line) for line in self.problems]),
        ):
            if items:
                lines.append(f"{title}:")
                lines += [f"  - {item}" for item in items]
        if not self.problems:
            lines.append("Data set OK.")
        return "\n".join(lines)


def _summarise(index: DetectionIndex) -> SplitSummary:
    counts = np.zeros(len(index.categories.ids), dtype=np.int64)
    boxes = crowd = empty = masks = 0
    for record in index.records:
        labels = record.labels[~record.iscrowd]
        np.add.at(counts, labels, 1)
        boxes += len(labels)
        crowd += int(record.iscrowd.sum())
        empty += len(labels) == 0
        if record.segmentations is not None:
            masks += sum(s is not None for s, c in zip(record.segmentations, record.iscrowd, strict=True) if not c)
    return SplitSummary(len(index.records), empty, boxes, crowd, tuple(int(c) for c in counts), masks)


def _check_masks(index: DetectionIndex, split: str, masks: bool | None, report: CheckReport,
                 problems: list[str]) -> None:
    """The instance-mask checks of a split (see the module docstring): problems for segmentation (``masks``),
    warnings when the split merely has masks (``None``), nothing for detection (``False``)."""
    if masks is False or (masks is None and not index.has_masks):
        return
    lines = index.mask_problems()
    unreadable, notes = RepairLog(), RepairLog()
    for record in index.records:
        for k, segmentation in enumerate(record.segmentations or []):
            if not isinstance(segmentation, list):
                continue  # RLE: checked when parsed
            where = f"{record.path} object {k + 1}"
            _, dropped = polygon_parts(segmentation)
            if dropped is not None:
                unreadable.add(f"{dropped} (left out of the mask)", where)
            outside = outside_image(segmentation, record.width, record.height, CLIP_TOLERANCE_PX)
            if outside == "entirely" and not record.iscrowd[k]:
                unreadable.add("polygons that cover no pixel of their image (outside it, or enclosing no area): an "
                               "empty mask", where)
            elif outside == "partly":
                notes.add("polygons reaching outside their image (the mask is clipped to it)", where)
            if crosses_itself(segmentation):
                notes.add("polygons that cross themselves (filled by COCO's rule, which may not be the shape meant)",
                          where)
    lines += [f"{index.source}: {line}" for line in unreadable.lines()]
    if masks:
        problems.extend(lines)
    else:
        for line in lines:
            report.add_warning(f"{split}: {line} (instance segmentation refuses these)")
    for line in notes.lines():
        report.add_warning(f"{split}: {line}")


def _check_images(
    index: DetectionIndex, split: str, decode: bool, progress: bool, report: CheckReport, problems: list[str]
) -> None:
    """Verify the images of a split: problems go to ``problems`` (the split's own list, which already holds its
    annotation problems), warnings and repairs to ``report``."""
    records = index.records
    infos = probe_images([r.path for r in records], verify=True, progress=progress, desc=f"checking {split} images")
    repairs = RepairLog()
    for record, info in zip(records, infos, strict=True):
        if isinstance(info, InputFileError):
            if not note_missing_folder(problems, record.path, index.source):
                problems.append(str(info))
            continue
        orientation = use_exif_orientation(info, record.width, record.height)
        if orientation is None:
            # Boxes "outside the image" are what a wrong size looks like from the annotations: the size is the
            # cause to report, not each of its consequences.
            derived = index.size_problems.get(record.image_id, [])
            problems[:] = [line for line in problems if line not in derived]
            message = size_mismatch_message(info, record.width, record.height, len(derived))
            problems.append(f"{record.path}: {message}")
            continue
        if not orientation:
            repairs.add("EXIF rotation not applied: the boxes were drawn on the stored pixels", str(record.path))
        # A JPEG not ending with its end marker may be truncated: only decoding it tells (data after the marker,
        # which some cameras write, decodes normally and is not worth a word). Likewise a TIFF whose pixel data
        # runs past the end of the file.
        if decode or not info.complete:
            try:
                warning = check_decodes(record.path, record.width, record.height)
            except InputFileError as e:
                problems.append(str(e))
                continue
            if warning is not None:
                report.add_warning(warning)
    report.repairs += [f"{split}: {line}" for line in repairs.lines()]
    duplicated = [p for p, n in Counter(r.path.resolve() for r in records).items() if n > 1]
    if duplicated:
        report.add_warning(
            f"{split}: {len(duplicated)} image files are listed more than once (e.g. {duplicated[0]})"
        )


def check_dataset(
    data: DatasetSpec | str | Path,
    splits: Sequence[str] | None = None,
    *,
    decode: bool = False,
    progress: bool = True,
    raise_on_problems: bool = True,
    masks: bool | None = None,
) -> CheckReport:
    """Parse and repair the annotations, verify every image, and report.

    Args:
        data: a resolved spec (its cached splits are checked, so data sets built from it afterwards use the checked
            annotations) or a ``--data`` path.
        splits: the splits to check; None checks all the spec has, except a test split whose files do not exist
            at all (a warning: training does not read it, and Roboflow's data.yaml names one even when the export
            has none).
        decode: fully decode every image (slow); by default only headers are read, and JPEGs missing their end
            marker are decoded.
        progress: show progress bars for splits of more than 200 images.
        raise_on_problems: raise instead of returning a report with problems.
        masks: True when the instance masks will be trained on or evaluated (their problems stop it), False when
            they will not (not checked), None to check them as warnings when the data set has them.

    Raises:
        DatasetError: when there are problems that cannot be repaired (and ``raise_on_problems``), listing all.
        InputFileError: ``data`` matches no accepted layout.
    """
    spec = data if isinstance(data, DatasetSpec) else resolve_dataset(data)
    asked = splits is not None
    splits = list(spec.splits) if splits is None else list(splits)
    categories = spec.categories
    report = CheckReport(spec.source, spec.format, list(categories.names), list(categories.ids))
    report.repairs += [f"{spec.source}: {note}" for note in spec.notes]
    if categories.ids and not categories.is_contiguous:
        ids = ", ".join(str(i) for i in categories.ids[:12]) + (", ..." if len(categories.ids) > 12 else "")
        report.repairs.append(f"category ids {ids} mapped to contiguous labels 0..{len(categories.ids) - 1}")
    if not categories.ids and spec.reference_split not in splits:
        # COCO splits take their labels from the training file: when it cannot be read (invalid JSON, no
        # categories), the checked splits have no classes either, and its problems are the ones to fix first.
        report.add_problems(spec.index(spec.reference_split).problems, spec.reference_split)
    for split in splits:
        files = spec.splits.get(split)
        if not asked and split == "test" and files is not None and _nothing_exists(files):
            named = ", ".join(str(p) for p in (*files.images, *([files.annotations] if files.annotations else [])))
            report.add_warning(f"test: {named} does not exist, so the test split is not checked (training and "
                               "validation do not use it)")
            continue
        index = spec.index(split, progress=progress)
        report.indexes[split] = index
        problems = list(index.problems)
        report.repairs += [f"{split}: {line}" for line in index.repairs.lines()]
        _check_images(index, split, decode, progress, report, problems)
        _check_masks(index, split, masks, report, problems)
        report.add_problems(problems, split)
        report.splits[split] = _summarise(index)
    _cross_split_checks(report)
    if report.problems and raise_on_problems:
        raise DatasetError(
            f"{spec.source}: {len(report.problems)} problem(s) ({report.problems_by_split()}) that cannot be "
            "repaired automatically (nothing was changed on disk); fix them and run again",
            report.problems,
        )
    return report


def _nothing_exists(files: SplitFiles) -> bool:
    return not any(p.exists() for p in files.images) and (files.annotations is None or not files.annotations.exists())


def _cross_split_checks(report: CheckReport) -> None:
    train = report.splits.get("train")
    # Only worth saying when the annotations parsed cleanly: otherwise it is a consequence of the listed problems.
    if train is not None and train.boxes == 0 and not report.indexes["train"].problems:
        report.add_problems([f"{report.source}: the training split has no objects at all"], "train")
    if train is not None and train.boxes:
        unused = [n for n, c in zip(report.class_names, train.boxes_per_class, strict=True) if c == 0]
        if unused:
            report.add_warning(f"classes without any training box: {', '.join(unused)}")
    if "train" in report.indexes:
        for split in ("val", "test"):
            if split in report.indexes:
                train_files = {r.path.resolve() for r in report.indexes["train"].records}
                shared = [r.path for r in report.indexes[split].records if r.path.resolve() in train_files]
                if shared:
                    report.add_warning(
                        f"{len(shared)} {split} images are also training images (e.g. {shared[0]}): "
                        "validation scores will be optimistic"
                    )
