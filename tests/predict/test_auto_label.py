"""dfine.predict.auto_label: the COCO annotation file's ids, names and file names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dfine.predict.auto_label import CocoLabelWriter, common_folder


def test_ids_names_and_file_names(tmp_path: Path) -> None:
    (tmp_path / "photos" / "day").mkdir(parents=True)
    writer = CocoLabelWriter(["cat", "dog"], [3, 7], tmp_path / "photos")  # a model trained on a file with ids 3, 7
    writer.add(tmp_path / "photos" / "day" / "a.jpg", 100, 50,
               np.array([[10, 10, 30, 40], [5, 5, 5, 20], [0, 0, 100, 50]]), np.array([1, 0, 0]),
               np.array([0.9, 0.8, 0.123456789]))
    writer.add(tmp_path / "elsewhere.jpg", 20, 20, np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0))
    written = writer.write(tmp_path / "labels.json")
    document = json.loads(written.read_text())
    assert document["categories"] == [{"id": 3, "name": "cat", "supercategory": ""},
                                      {"id": 7, "name": "dog", "supercategory": ""}]
    assert [im["file_name"] for im in document["images"]] == ["day/a.jpg", str(tmp_path / "elsewhere.jpg")]
    # the zero-width box is left out; ids follow the labels; scores are kept for review
    assert [(a["category_id"], a["bbox"], a["area"]) for a in document["annotations"]] == [
        (7, [10.0, 10.0, 20.0, 30.0], 600.0), (3, [0.0, 0.0, 100.0, 50.0], 5000.0)]
    assert document["annotations"][1]["score"] == 0.12346 and document["annotations"][1]["iscrowd"] == 0
    # box-only, as COCO tools expect it written: Datumaro (CVAT's COCO import) refuses an annotation without it
    assert all(a["segmentation"] == [] for a in document["annotations"])
    assert [a["id"] for a in document["annotations"]] == [1, 2]


def test_without_data_set_ids_labels_count_from_one(tmp_path: Path) -> None:
    writer = CocoLabelWriter(["a", "b", "c"], None, tmp_path)
    assert [c["id"] for c in writer.categories] == [1, 2, 3]
    assert CocoLabelWriter(["a", "b"], [5], tmp_path).category_ids == [1, 2]  # ids that do not fit are not used


def test_common_folder(tmp_path: Path) -> None:
    (tmp_path / "a" / "x").mkdir(parents=True)
    (tmp_path / "a" / "y").mkdir()
    assert common_folder([tmp_path / "a" / "x" / "1.jpg", tmp_path / "a" / "y" / "2.jpg"]) == (tmp_path / "a").resolve()
    assert common_folder([tmp_path / "a" / "x" / "1.jpg"]) == (tmp_path / "a" / "x").resolve()
