"""``dfine check --data D``: a data set checked as training reads it, without training.

Prints the classes, the images and boxes of each split and class, what was repaired in memory and what must be
fixed; ``--preview`` draws some images with their boxes. The exit status is 0 when the data set can be trained on
and 2 when it has problems, so the command also serves as a gate in a labelling pipeline.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

    from dfine.data.check import CheckReport
    from dfine.data.index import ImageRecord

PREVIEW_SUFFIXES = (".jpg", ".jpeg", ".png")
PREVIEW_IMAGES = 16


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "check", help="check a data set (annotations, images, classes) without training",
        description="Read a data set as dfine train does: parse and repair the annotations, verify every image, "
                    "then print the classes, the images and boxes per split and per class, the repairs (made in "
                    "memory only) and the problems. Exit status 0 when it can be trained on, 2 otherwise.")
    p.add_argument("--data", required=True,
                   help="data YAML or data set folder (COCO, Roboflow, YOLO or Pascal VOC layout)")
    p.add_argument("--split", action="append", default=None, metavar="SPLIT",
                   help="a split to check (repeatable; default: every split the data set has)")
    p.add_argument("--decode", action="store_true",
                   help="decode every image fully (slow; by default only headers are read, and JPEGs without "
                        "their end marker are decoded)")
    p.add_argument("--preview", metavar="FILE", default=None,
                   help=f"also draw up to {PREVIEW_IMAGES} images of the first checked split, spread over it, with "
                        "their boxes into FILE (.jpg or .png)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def class_table(report: CheckReport) -> str:
    """Boxes per class and split: ``label  class  train  val`` (crowd regions not counted)."""
    splits = list(report.splits)
    width = max([len("class"), *(len(name) for name in report.class_names)])
    header = f"{'label':>5}  {'class':<{width}}" + "".join(f"  {split:>8}" for split in splits)
    lines = [header]
    for label, name in enumerate(report.class_names):
        counts = "".join(f"  {report.splits[split].boxes_per_class[label]:>8}" for split in splits)
        lines.append(f"{label:>5}  {name:<{width}}{counts}")
    return "\n".join(lines)


def draw_preview(records: list[ImageRecord], class_names: list[str],
                 cell_size: int = 400) -> tuple[Image.Image | None, int]:
    """A grid of up to :data:`PREVIEW_IMAGES` records spread evenly over ``records``, each image as training reads
    it (EXIF orientation as the annotations expect) with its boxes dashed, titled with its file name; and how many
    images it shows (None and 0 when none could be read)."""
    import numpy as np
    from PIL import Image

    from dfine.data.images import load_image
    from dfine.errors import InputFileError
    from dfine.imaging.draw import draw_ground_truth, make_grid, shrink_to_fit

    count = min(PREVIEW_IMAGES, len(records))
    chosen = [records[i] for i in np.linspace(0, len(records) - 1, count).round().astype(int)] if count else []
    pictures, titles = [], []
    for record in chosen:
        try:
            pixels = load_image(record.path, record.width, record.height)
        except InputFileError:  # already listed among the problems
            continue
        picture, scale = shrink_to_fit(Image.fromarray(pixels.permute(1, 2, 0).numpy()), cell_size)
        keep = ~record.iscrowd
        pictures.append(draw_ground_truth(picture, record.boxes[keep] * scale, record.labels[keep], class_names))
        boxes = int(keep.sum())
        titles.append(f"{record.path.name[:40]}: {boxes} box{'es' if boxes != 1 else ''}")
    return (make_grid(pictures, columns=4, titles=titles) if pictures else None), len(pictures)


def run(args: argparse.Namespace) -> int:
    import sys

    from dfine.data import check_dataset, resolve_dataset
    from dfine.errors import DFineError
    from dfine.utils.files import atomic_write

    preview = Path(args.preview) if args.preview is not None else None
    if preview is not None and preview.suffix.lower() not in PREVIEW_SUFFIXES:
        raise DFineError(f"--preview {preview}: the picture is written as JPEG or PNG, so the name must end in .jpg, "
                         ".jpeg or .png")
    spec = resolve_dataset(args.data)
    splits = list(dict.fromkeys(args.split)) if args.split else list(spec.splits)
    missing = [split for split in splits if split not in spec.splits]
    if missing:
        raise DFineError(f"{spec.source}: no '{missing[0]}' split (found: {', '.join(spec.splits) or 'none'})")
    # No --split: check_dataset's default, which tolerates a test split that does not exist (training skips it).
    report = check_dataset(spec, splits if args.split else None, decode=args.decode,
                           progress=not args.no_progress and sys.stderr.isatty(), raise_on_problems=False)
    print(report.summary())
    if report.class_names and report.splits:
        print("\nBoxes per class:")
        print(class_table(report))
    first = next(iter(report.indexes), None)  # the first checked split (a test split that does not exist is not)
    if preview is not None and first is not None:
        picture, shown = draw_preview(report.indexes[first].records, report.class_names)
        if picture is None:
            print(f"no readable image in {first}: {preview} not written")
        else:
            fmt = "PNG" if preview.suffix.lower() == ".png" else "JPEG"
            try:
                atomic_write(preview, lambda temporary: picture.save(temporary, format=fmt, quality=90))
            except OSError as error:
                raise DFineError(f"--preview {preview}: cannot be written ({error.strerror or error})") from None
            print(f"wrote {preview} ({shown} {first} image{'s' if shown != 1 else ''} with their boxes)")
    if not report.ok:
        print(f"dfine check: {len(report.problems)} problem(s) to fix ({report.problems_by_split()})",
              file=sys.stderr)
        return 2
    return 0
