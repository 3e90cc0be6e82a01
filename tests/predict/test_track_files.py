"""track_source on a synthetic video of moving squares: the tracks, records, MOTChallenge file, annotated MP4 and
metrics; and the sources tracking refuses, each in one line naming the file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from trackhelpers import FRAMES, SquareDetector, frames, write_ground_truth

from dfine.errors import ConfigError, InputFileError
from dfine.predict.mot import read_mot
from dfine.predict.track_files import track_source

pytest.importorskip("trackers")
av = pytest.importorskip("av")

from dfine.imaging.video import VideoReader, VideoWriter


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    with VideoWriter(folder / "squares.mp4", 10) as writer:
        for picture in frames():
            writer.write(picture)
    write_ground_truth(folder / "gt.txt")
    return folder


def test_a_video_gives_tracks_records_a_mot_file_a_video_and_perfect_metrics(clip, tmp_path) -> None:
    out = tmp_path / "out"
    run = track_source(SquareDetector(), clip / "squares.mp4", out, ground_truth=clip / "gt.txt", progress=False)
    assert run.frames == FRAMES and run.tracks == 4 and run.video == out / "squares.mp4"
    metrics = run.metrics
    assert metrics is not None and metrics.IDSW == 0 and metrics.MOTA > 0.9 and metrics.IDF1 > 0.9, metrics
    assert json.loads((out / "tracking_metrics.json").read_text())["IDSW"] == 0
    records = json.loads((out / "predictions.json").read_text())
    assert len(records) == run.detections and {"track_id", "frame", "time", "bbox"} <= set(records[0])
    assert records[0]["file_name"] == str(clip / "squares.mp4") and records[-1]["frame"] == FRAMES - 1
    # ids count from 1; a square's first frame precedes its confirmation (null), then the id holds
    assert records[0]["track_id"] is None and {r["track_id"] for r in records} - {None} == {1, 2, 3, 4}
    tracks = read_mot(out / "tracks.txt")
    assert tracks.boxes == sum(r["track_id"] is not None for r in records)
    with VideoReader(out / "squares.mp4") as annotated:
        assert sum(1 for _ in annotated) == FRAMES and annotated.fps == 10
    assert 0 < run.tracker_seconds < run.seconds
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_folder_of_frames_is_taken_in_natural_order(tmp_path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, picture in enumerate(frames()):
        picture.save(folder / f"f{i + 1}.png")  # f10 after f9, not after f1
    write_ground_truth(tmp_path / "gt.txt")
    run = track_source(SquareDetector(), folder, tmp_path / "out", tracker="ocsort", ground_truth=tmp_path / "gt.txt",
                       fps=12, classes=["square"], progress=False)
    assert run.video == tmp_path / "out" / "frames.mp4" and run.metrics.IDSW == 0 and run.metrics.MOTA > 0.9
    records = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert records[-1]["file_name"].endswith(f"f{FRAMES}.png") and records[-1]["time"] == pytest.approx(23 / 12,
                                                                                                         abs=1e-3)


def test_sources_that_cannot_be_tracked_are_one_line_errors(clip, tmp_path) -> None:
    still = tmp_path / "still.png"
    frames()[0].save(still)
    with pytest.raises(InputFileError, match="still.png: is a still image: tracking needs a video"):
        track_source(SquareDetector(), still, tmp_path / "a", progress=False)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    frames()[0].save(mixed / "a.png")
    (mixed / "b.mp4").write_bytes((clip / "squares.mp4").read_bytes())
    with pytest.raises(InputFileError, match="mixed: holds videos .*track one video at a time"):
        track_source(SquareDetector(), mixed, tmp_path / "b", progress=False)
    empty = tmp_path / "empty.mp4"
    container = av.open(str(empty), "w")  # a header, a declared video stream, and no frame at all
    stream = container.add_stream("mpeg4", rate=10)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    container.start_encoding()
    container.close()
    with pytest.raises(InputFileError, match="empty.mp4: (has no video stream|no video frame could be decoded)"):
        track_source(SquareDetector(), empty, tmp_path / "c", progress=False)
    with pytest.raises(ConfigError, match="unknown tracker 'strongsort': choose one of"):
        track_source(SquareDetector(), clip / "squares.mp4", tmp_path / "d", tracker="strongsort", progress=False)
    bad = tmp_path / "gt.txt"
    bad.write_text("1,1,0,0,10,10\n2,1,oops,0,10,10\n")
    with pytest.raises(InputFileError, match="gt.txt: line 2: expected frame,id,x,y,w,h"):
        track_source(SquareDetector(), clip / "squares.mp4", tmp_path / "e", ground_truth=bad, progress=False)
    assert not (tmp_path / "e" / "predictions.json").exists()  # refused before any frame was tracked


class SquareSegmenter(SquareDetector):
    """SquareDetector with an instance mask per square (its box, filled), as a segmentation model gives them."""

    def predict(self, images, threshold: float = 0.5):
        results = super().predict(images, threshold)
        for image, result in zip(images, results):
            masks = np.zeros((len(result["boxes"]), image.height, image.width), dtype=bool)
            for mask, (x1, y1, x2, y2) in zip(masks, result["boxes"].int().tolist()):
                mask[y1:y2, x1:x2] = True
            result["masks"] = masks
        return results


def test_a_segmentation_models_masks_are_drawn_and_written(clip, tmp_path, monkeypatch) -> None:
    import dfine.imaging.draw as draw

    drawn = []
    original = draw.draw_tracks

    def spy(*args, **kwargs):
        drawn.append(kwargs.get("masks"))
        return original(*args, **kwargs)

    monkeypatch.setattr(draw, "draw_tracks", spy)
    run = track_source(SquareSegmenter(), clip / "squares.mp4", tmp_path / "out", progress=False)
    records = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert len(drawn) == run.frames and all(m is not None for m in drawn)
    tracked = [m for m in drawn if len(m)]
    assert tracked and all(m.dtype == bool and m.any(axis=(1, 2)).all() for m in tracked)
    assert all("segmentation" in r for r in records)
