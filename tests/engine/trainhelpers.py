"""Helpers for the training tests: tiny synthetic data sets and the smallest sensible training call.

(A uniquely named module rather than conftest.py, like ``tests/data/datahelpers.py``.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from dfine.data import make_synthetic_dataset

# D-FINE-N at 160 px has 10x10 + 5x5 = 125 encoder positions, so it needs fewer than the default 300 queries.
TINY: dict[str, Any] = {"model": "dfine-n-coco", "image_size": 160, "workers": 0, "pretrained_backbone": False,
                        "num_queries": 100, "progress": False}


def tiny_data(root: Path, num_train: int = 8, num_val: int = 4, seed: int = 0, **kwargs: Any) -> Path:
    """A synthetic 3-class COCO data set of 160x160 images; returns its data.yaml."""
    return make_synthetic_dataset(root, num_train=num_train, num_val=num_val, image_size=(160, 160), seed=seed,
                                  empty_fraction=kwargs.pop("empty_fraction", 0.0), **kwargs)


def drop_annotations(data_yaml: Path, split: str, keep_images: set[int]) -> None:
    """Remove the boxes of every ``split`` image whose id is not in ``keep_images`` (the images stay)."""
    config = yaml.safe_load(data_yaml.read_text())
    ann_file = data_yaml.parent / config[split]["annotations"]
    coco = json.loads(ann_file.read_text())
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep_images]
    ann_file.write_text(json.dumps(coco))


def same_images_for_val(data_yaml: Path, repeats: int = 1) -> Path:
    """A data YAML whose val split is the training images, and whose train split lists them ``repeats`` times
    (fewer, longer epochs: less per-epoch overhead in overfitting tests)."""
    config = yaml.safe_load(data_yaml.read_text())
    root = data_yaml.parent
    coco = json.loads((root / config["train"]["annotations"]).read_text())
    images, annotations = [], []
    for r in range(repeats):
        offset = r * len(coco["images"])
        images += [{**im, "id": im["id"] + offset} for im in coco["images"]]
        annotations += [{**a, "id": len(annotations) + i + 1, "image_id": a["image_id"] + offset}
                        for i, a in enumerate(coco["annotations"])]
    repeated = root / "annotations" / "instances_train_repeated.json"
    repeated.write_text(json.dumps({**coco, "images": images, "annotations": annotations}))
    out = root / "overfit.yaml"
    out.write_text(yaml.safe_dump({
        "train": {"images": config["train"]["images"], "annotations": "annotations/instances_train_repeated.json"},
        "val": {"images": config["train"]["images"], "annotations": config["train"]["annotations"]},
    }))
    return out
