"""`dfine predict --save-coco FILE`: detections as a COCO annotation file that dfine train and labelling tools read,
every image listed."""

from __future__ import annotations

import json

import pytest
import yaml

from dfine.cli.main import main
from dfine.data import check_dataset, resolve_dataset


def test_the_file_holds_the_detections_and_trains(model_dir, image_dir, tmp_path, capsys) -> None:
    from faster_coco_eval import COCO

    labels, out = tmp_path / "labels.json", tmp_path / "out"
    # random weights: every score is about 0.13, so 0.0 keeps boxes and 0.5 keeps none
    assert main(["predict", str(image_dir), "--model", str(model_dir), "--output", str(out), "--threshold", "0.0",
                 "--save-coco", str(labels), "--no-progress"]) == 0
    assert f"COCO annotations in {labels}" in capsys.readouterr().out
    coco = COCO(str(labels), print_function=lambda *a, **k: None)  # a well-formed COCO file
    document = json.loads(labels.read_text())
    assert [im["file_name"] for im in document["images"]] == ["img0.jpg", "img1.jpg", "img2.jpg"]
    assert all((im["width"], im["height"]) == (200, 200) for im in document["images"])
    assert [c["id"] for c in document["categories"]] == list(range(1, 81))
    assert document["categories"][0]["name"] == "person"
    # the same boxes as predictions.json, image by image
    records = json.loads((out / "predictions.json").read_text())
    assert len(document["annotations"]) == len(records) > 0
    for image in document["images"]:
        mine = sorted(a["bbox"] for a in coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]])))
        theirs = sorted(r["bbox"] for r in records if r["file_name"].endswith(image["file_name"]))
        assert mine == theirs
    assert {a["category_id"] - 1 for a in document["annotations"]} == {r["category_id"] for r in records}
    # each box's uncertainty, to review the least certain pre-labels first
    assert sorted(a["uncertainty"] for a in document["annotations"]) == sorted(r["uncertainty"] for r in records)
    assert all(len(a["edge_uncertainty"]) == 4 and min(a["edge_uncertainty"]) >= 0 for a in document["annotations"])
    # with the image folder, the file is a training data set
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump({"train": {"images": str(image_dir), "annotations": str(labels)}}))
    report = check_dataset(resolve_dataset(data), ["train"], progress=False)
    assert report.splits["train"].images == 3 and report.splits["train"].boxes == len(records)


def test_images_without_detections_are_listed(model_dir, image_dir, tmp_path) -> None:
    labels = tmp_path / "labels.json"
    assert main(["predict", str(image_dir / "img1.jpg"), "--model", str(model_dir), "--output", str(tmp_path / "o"),
                 "--threshold", "0.5", "--save-coco", str(labels), "--no-progress", "--no-save-images"]) == 0
    document = json.loads(labels.read_text())
    assert document["images"] == [{"id": 1, "file_name": "img1.jpg", "width": 200, "height": 200}]
    assert document["annotations"] == []


def test_the_run_s_predictions_json_is_refused_as_the_annotation_file(image_dir, tmp_path, capsys) -> None:
    """It would be written with the detections, then replaced by the COCO file: predictions.json silently lost."""
    out = tmp_path / "out"
    assert main(["predict", str(image_dir), "--model", "no-such-model-is-loaded", "--output", str(out),
                 "--save-coco", str(out / "predictions.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is the predictions.json this run writes" in err


@pytest.mark.parametrize("where", ["folder", "inside a file"])
def test_a_bad_annotation_file_is_refused_before_predicting(model_dir, image_dir, tmp_path, capsys, where) -> None:
    (tmp_path / "taken").write_text("x")
    target = tmp_path if where == "folder" else tmp_path / "taken" / "labels.json"
    assert main(["predict", str(image_dir), "--model", "no-such-model-is-loaded", "--output", str(tmp_path / "o"),
                 "--save-coco", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert ("is a folder: give the annotation file to write" if where == "folder"
            else f"{tmp_path / 'taken'}: is a file") in err
