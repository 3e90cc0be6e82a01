"""`dfine predict` on videos: every frame predicted as the same picture would be, an annotated MP4, and videos that
cannot be read skipped in a folder and refused alone."""

from __future__ import annotations

import json
import logging

import pytest
from hf_oracle import natural_images

import dfine
from dfine.cli.main import main

av = pytest.importorskip("av")

from dfine.imaging.video import VideoReader, VideoWriter

FRAMES = 5


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("videos") / "street.mp4"
    with VideoWriter(path, 10) as writer:
        for picture in natural_images(FRAMES, 160, seed=3):
            writer.write(picture)
    return path


def _records(out) -> list[dict]:
    return json.loads((out / "predictions.json").read_text())


def test_every_frame_is_predicted_and_drawn(model_dir, video, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["predict", str(video), "--model", str(model_dir), "--output", str(out), "--threshold", "0.0",
                 "--batch-size", "2", "--no-progress"]) == 0
    records = _records(out)
    assert set(records[0]) == {"image_id", "file_name", "frame", "time", "category_id", "category_name", "bbox",
                               "score", "uncertainty", "edge_uncertainty"}
    assert sorted({r["frame"] for r in records}) == list(range(FRAMES))
    for r in records:
        assert r["image_id"] == r["frame"] and r["file_name"] == str(video)
        assert r["time"] == pytest.approx(r["frame"] / 10)
    with VideoReader(out / "street.mp4") as annotated:
        frames = list(annotated)
        assert annotated.fps == 10
    assert len(frames) == FRAMES and frames[0].image.size == (160, 160)
    summary = capsys.readouterr().out
    assert f"{len(records)} detections in {FRAMES} frames of 1 video" in summary
    assert "annotated videos in" in summary


def test_a_variable_rate_video_keeps_its_frame_times(model_dir, tmp_path) -> None:
    """Frames shown at uneven times (a phone's variable rate) keep those times in the annotated video, so it stays
    in step with the original and its sound; the average rate alone would drift."""
    times = [0.0, 0.1, 0.15, 0.6, 0.7]
    source = tmp_path / "phone.mp4"
    with VideoWriter(source, 10) as writer:
        for picture, time in zip(natural_images(len(times), 96, seed=4), times, strict=True):
            writer.write(picture, time)
    out = tmp_path / "out"
    assert main(["predict", str(source), "--model", str(model_dir), "--output", str(out), "--threshold", "0.0",
                 "--no-progress"]) == 0
    with VideoReader(out / "phone.mp4") as annotated:
        assert [f.time for f in annotated] == pytest.approx(times, abs=1e-4)
    assert sorted({r["time"] for r in _records(out)}) == pytest.approx(times, abs=1e-4)


def test_frames_get_the_detections_of_the_same_pictures(model_dir, video, tmp_path) -> None:
    predictor = dfine.Predictor.from_pretrained(model_dir, device="cpu")
    with VideoReader(video) as frames:
        pictures = [frame.image for frame in frames]
    # random weights score every box alike (about 0.13 here): a threshold between the 30th and 31st best scores
    # keeps a few boxes per frame without depending on the exact values
    every = sorted((s for det in predictor.predict(pictures, 0.0) for s in det["scores"].tolist()), reverse=True)
    assert every[29] > every[30]
    threshold = (every[29] + every[30]) / 2
    out = tmp_path / "out"
    assert main(["predict", str(video), "--model", str(model_dir), "--output", str(out), "--threshold",
                 repr(threshold), "--batch-size", "3", "--no-save-images", "--no-progress"]) == 0
    assert not (out / "street.mp4").exists()
    records = _records(out)
    expected = list(enumerate(predictor.predict(pictures, threshold)))
    assert len(records) == 30
    for index, det in expected:
        mine = sorted((r for r in records if r["frame"] == index), key=lambda r: -r["score"])
        order = det["scores"].argsort(descending=True)
        assert [r["score"] for r in mine] == pytest.approx(det["scores"][order].tolist(), abs=2e-5)
        assert [r["category_id"] for r in mine] == det["labels"][order].tolist()
        x1, y1, x2, y2 = det["boxes"][order].clamp(0, 160).unbind(-1)
        xywh = [[a, b, c - a, d - b] for a, b, c, d in zip(x1.tolist(), y1.tolist(), x2.tolist(), y2.tolist())]
        assert [v for r in mine for v in r["bbox"]] == pytest.approx([v for box in xywh for v in box], abs=0.02)


def test_a_folder_of_images_and_videos(model_dir, video, image_dir, tmp_path, caplog, capsys) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((image_dir / "img0.jpg").read_bytes())
    (folder / "b.mov").write_bytes(video.read_bytes())  # an MP4 under another name: x.mov -> x.mov.mp4
    (folder / "c.mp4").write_text("not a video")
    (folder / "d.jpg").write_bytes((image_dir / "img1.jpg").read_bytes())
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="dfine"):
        assert main(["predict", str(folder), "--model", str(model_dir), "--output", str(out), "--threshold", "0.0",
                     "--batch-size", "4", "--no-progress"]) == 0
    assert any("c.mp4: cannot be read as a video" in m for m in caplog.messages)
    records = _records(out)
    ids = {}
    for r in records:
        ids.setdefault(r["file_name"].split("/")[-1], set()).add(r["image_id"])
    # ids follow the files' order, a video taking one per frame; the image before it is predicted first
    assert ids == {"a.jpg": {0}, "b.mov": set(range(1, 1 + FRAMES)), "d.jpg": {1 + FRAMES}}
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "b.mov.mp4", "d.jpg", "predictions.json"]
    summary = capsys.readouterr().out
    assert f"in 2 images and {FRAMES} frames of 1 video" in summary
    assert "skipped 1 unreadable file" in summary


def test_a_single_unreadable_video_is_one_line(model_dir, tmp_path, capsys) -> None:
    bad = tmp_path / "clip.mkv"
    bad.write_bytes(b"\x1aE\xdf\xa3" + b"\x00" * 64)  # a Matroska signature and nothing after it
    assert main(["predict", str(bad), "--model", str(model_dir), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "clip.mkv" in err and "video" in err
    assert not (tmp_path / "o" / "predictions.json").exists()


def test_progress_bar_counts_frames(model_dir, video, tmp_path, capsys) -> None:
    assert main(["predict", str(video), "--model", str(model_dir), "--output", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert f"{FRAMES}/{FRAMES}" in err and "frame/s" in err


def test_a_video_through_onnxruntime(video, tmp_path) -> None:
    """The exported-model backend takes video frames too (the graph's fixed batch of 1 gets them one by one)."""
    from test_predict_cli import _tiny_onnx

    model = tmp_path / "tiny.onnx"
    _tiny_onnx(model)
    out = tmp_path / "out"
    assert main(["predict", str(video), "--model", str(model), "--output", str(out), "--batch-size", "2",
                 "--no-progress"]) == 0
    records = _records(out)
    # two fixed boxes per frame, clipped to the 160×160 frame
    expected = [(frame, name) for frame in range(FRAMES) for name in ("cat", "dog")]
    assert [(r["frame"], r["category_name"]) for r in records] == expected
    assert records[1]["bbox"] == [150.0, 100.0, 10.0, 60.0]
    with VideoReader(out / "street.mp4") as annotated:
        assert sum(1 for _ in annotated) == FRAMES


def test_the_annotated_video_keeps_the_sound(model_dir, tmp_path) -> None:
    from videohelpers import video_with_sound

    source = video_with_sound(tmp_path / "talk.mp4", frames=4)
    out = tmp_path / "out"
    assert main(["predict", str(source), "--model", str(model_dir), "--output", str(out), "--threshold", "0.0",
                 "--no-progress"]) == 0
    with av.open(str(out / "talk.mp4")) as annotated:
        assert [s.type for s in annotated.streams] == ["video", "audio"]
        assert sum(1 for _ in annotated.decode(video=0)) == 4
    assert sorted(p.name for p in out.iterdir()) == ["predictions.json", "talk.mp4"]  # no temporary files left


def test_a_failed_sound_copy_keeps_the_annotated_video(model_dir, tmp_path, monkeypatch, caplog) -> None:
    from videohelpers import video_with_sound

    import dfine.predict.files

    def broken(frames, source, output):
        output.write_bytes(b"half")
        raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")

    monkeypatch.setattr(dfine.predict.files, "copy_audio", broken)
    source = video_with_sound(tmp_path / "talk.mp4", frames=3)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="dfine"):
        assert main(["predict", str(source), "--model", str(model_dir), "--output", str(out), "--threshold", "0.0",
                 "--no-progress"]) == 0
    assert "the audio could not be copied (" in caplog.text and "the annotated video has none" in caplog.text
    with av.open(str(out / "talk.mp4")) as annotated:
        assert [s.type for s in annotated.streams] == ["video"]
        assert sum(1 for _ in annotated.decode(video=0)) == 3
