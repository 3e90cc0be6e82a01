"""`dfine track`: a video in, an annotated MP4 with its sound, records with track ids, MOTChallenge tracks and, with
--gt, the tracking scores; bad input is one line naming the file."""

from __future__ import annotations

import json

import pytest
from trackhelpers import frames, write_ground_truth

from dfine.cli.main import main

pytest.importorskip("trackers")
av = pytest.importorskip("av")

from videohelpers import video_with_sound


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_video_is_tracked_with_its_sound_and_scored(model_dir, tmp_path, capsys) -> None:
    source = video_with_sound(tmp_path / "talk.mp4", frames=4)
    gt = tmp_path / "gt.txt"
    gt.write_text("".join(f"{t},1,10,10,20,20,1,1,1\n" for t in range(1, 5)))
    out = tmp_path / "out"
    # random weights score about 0.1, below what starts a track: this checks the command's plumbing (tracking
    # itself is tested on the moving squares of tests/predict/test_track_files.py)
    assert main(["track", str(source), "--model", str(model_dir), "--output", str(out), "--threshold", "0.0",
                 "--tracker", "sort", "--gt", str(gt), "--no-progress", "--show-uncertainty"]) == 0
    printed = capsys.readouterr().out
    assert "frames" in printed and "tracking took" in printed and f"against {gt}" in printed
    assert "HOTA" in printed and "MOTA" in printed and "IDF1" in printed and "IDSW" in printed
    records = json.loads((out / "predictions.json").read_text())
    assert records and "track_id" in records[0] and {"uncertainty", "edge_uncertainty"} <= set(records[0])
    assert {r["frame"] for r in records} == {0, 1, 2, 3}
    metrics = json.loads((out / "tracking_metrics.json").read_text())
    assert metrics["frames"] == 4 and metrics["gt_tracks"] == 1
    lines = (out / "tracks.txt").read_text().splitlines()
    assert len(lines) == sum(r["track_id"] is not None for r in records)
    with av.open(str(out / "talk.mp4")) as annotated:
        assert [s.type for s in annotated.streams] == ["video", "audio"]  # the sound is kept


def test_a_folder_of_frames_without_video(model_dir, tmp_path, capsys) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, picture in enumerate(frames(3)):
        picture.save(folder / f"{i:04d}.jpg")
    out = tmp_path / "out"
    assert main(["track", str(folder), "--model", str(model_dir), "--output", str(out), "--no-save-video",
                 "--no-progress", "--batch-size", "2", "--classes", "person"]) == 0
    assert "over 3 frames" in capsys.readouterr().out
    assert (out / "tracks.txt").exists() and not list(out.glob("*.mp4"))


@pytest.mark.parametrize("case", ["bad_gt", "unknown_tracker", "no_frames", "still_image"])
def test_bad_input_is_one_line_naming_the_file(case, model_dir, tmp_path, capsys) -> None:
    source = tmp_path / "clip.mp4"
    video_with_sound(source, frames=2)
    args = ["track", str(source), "--model", str(model_dir), "--output", str(tmp_path / "out"), "--no-progress"]
    if case == "bad_gt":
        gt = tmp_path / "gt.txt"
        write_ground_truth(gt, 2)
        rows = gt.read_text()
        gt.write_text(rows + "3,1,10,10,-5,20,1,1,1\n")
        args += ["--gt", str(gt)]
        expected = f"{gt}: line {rows.count(chr(10)) + 1}: the box width and height must be positive"
    elif case == "unknown_tracker":
        args += ["--tracker", "deepsort"]
        expected = "unknown tracker 'deepsort': choose one of bytetrack, ocsort, botsort, sort, cbiou"
    elif case == "no_frames":
        empty = tmp_path / "empty.mp4"
        container = av.open(str(empty), "w")  # a declared video stream and no frame
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
        container.close()
        args[1] = str(empty)
        expected = f"{empty}: "
    else:
        still = tmp_path / "still.jpg"
        frames(1)[0].save(still)
        args[1] = str(still)
        expected = f"{still}: is a still image: tracking needs a video, a folder of frames or a pattern"
    assert main(args) == 2
    line = _error_line(capsys)
    assert expected in line, line
    assert not (tmp_path / "out" / "predictions.json").exists()
