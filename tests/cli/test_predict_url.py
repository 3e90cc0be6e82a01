"""`dfine predict URL`: the image or video at an http(s) URL is downloaded for the run, predicted like a file, and
named by its URL in predictions.json (served locally: tests never reach the internet)."""

from __future__ import annotations

import json

import pytest
from hf_oracle import natural_images
from httphelpers import closed_port_url, serve

from dfine.cli.main import main


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("site")
    natural_images(1, 120, seed=5)[0].save(folder / "street.jpg")
    (folder / "notes.txt").write_text("not a picture")
    with serve(folder) as base:
        yield folder, base


def test_an_image_url_is_predicted_like_the_file(model_dir, site, tmp_path) -> None:
    folder, base = site
    by_url, by_file = tmp_path / "url", tmp_path / "file"
    common = ["--model", str(model_dir), "--threshold", "0.0", "--no-progress"]
    assert main(["predict", f"{base}/street.jpg", "--output", str(by_url), *common]) == 0
    assert main(["predict", str(folder / "street.jpg"), "--output", str(by_file), *common]) == 0
    url_records = json.loads((by_url / "predictions.json").read_text())
    file_records = json.loads((by_file / "predictions.json").read_text())
    assert url_records and {r["file_name"] for r in url_records} == {f"{base}/street.jpg"}
    assert [{**r, "file_name": None} for r in url_records] == [{**r, "file_name": None} for r in file_records]
    assert (by_url / "street.jpg").is_file()  # the annotated picture takes the URL's file name


def test_a_url_in_the_coco_file_keeps_its_address(model_dir, site, tmp_path) -> None:
    _, base = site
    labels = tmp_path / "labels.json"
    assert main(["predict", f"{base}/street.jpg", "--model", str(model_dir), "--output", str(tmp_path / "out"),
                 "--save-coco", str(labels), "--no-progress", "--no-save-images"]) == 0
    # the downloaded file is gone after the run: the URL is where a labelling tool or a user finds the image
    [image] = json.loads(labels.read_text())["images"]
    assert image["file_name"] == "street.jpg" and image["coco_url"] == f"{base}/street.jpg"


def test_a_video_url_gives_an_annotated_video(model_dir, tmp_path) -> None:
    pytest.importorskip("av")
    from dfine.imaging.video import VideoReader, VideoWriter

    site = tmp_path / "site"
    site.mkdir()
    with VideoWriter(site / "clip.mp4", 5) as writer:
        for picture in natural_images(3, 96, seed=6):
            writer.write(picture)
    out = tmp_path / "out"
    with serve(site) as base:
        assert main(["predict", f"{base}/clip.mp4", "--model", str(model_dir), "--output", str(out),
                     "--threshold", "0.0", "--no-progress"]) == 0
        records = json.loads((out / "predictions.json").read_text())
    assert {r["file_name"] for r in records} == {f"{base}/clip.mp4"} and {r["frame"] for r in records} == {0, 1, 2}
    with VideoReader(out / "clip.mp4") as annotated:
        assert len(list(annotated)) == 3


@pytest.mark.parametrize("which", ["missing", "unreachable", "not an image"])
def test_a_bad_url_is_one_line(model_dir, site, tmp_path, capsys, which) -> None:
    _, base = site
    url, problem = {"missing": (f"{base}/gone.jpg", "could not download (HTTP 404"),
                    "unreachable": (closed_port_url(), "could not download ("),
                    "not an image": (f"{base}/notes.txt", "not an image file")}[which]
    assert main(["predict", url, "--model", str(model_dir), "--output", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"dfine predict: error: {url}: {problem}") and len(err.splitlines()) == 1, err
