"""MOTChallenge files: our lines read back, and a malformed ground-truth file is one line naming the file, the line
and the problem."""

from __future__ import annotations

import numpy as np
import pytest
from trackhelpers import truth_boxes, write_ground_truth

from dfine.errors import InputFileError
from dfine.predict.mot import evaluate_tracking, mot_line, read_mot


def test_lines_we_write_read_back(tmp_path) -> None:
    path = tmp_path / "tracks.txt"
    path.write_text(mot_line(1, 3, [10, 20, 40, 60], 0.876543, 2) + mot_line(2, 3, [12.5, 20, 42.5, 61], 0.5, 2))
    assert path.read_text().splitlines()[0] == "1,3,10.00,20.00,30.00,40.00,0.87654,2,-1,-1"
    sequence = read_mot(path)
    assert sorted(sequence.frames) == [1, 2] and sequence.boxes == 2 and sequence.last_frame == 2
    ids, boxes = sequence.frames[2]
    assert ids.tolist() == [3] and boxes.tolist() == [[12.5, 20.0, 30.0, 41.0]]


def test_ground_truth_scores_itself_perfectly_and_ignored_rows_are_left_out(tmp_path) -> None:
    path = tmp_path / "gt.txt"
    write_ground_truth(path)
    truth = read_mot(path)
    assert truth.boxes == sum(len(ids) for ids, _ in truth_boxes())
    metrics = evaluate_tracking(truth, truth)
    assert (metrics.MOTA, metrics.IDF1, metrics.HOTA, metrics.IDSW) == (pytest.approx(1.0), pytest.approx(1.0),
                                                                         pytest.approx(1.0), 0)
    # a 7th column of 0 marks a box not to score (as the MOT benchmarks' ground truth does)
    path.write_text("1,1,0,0,10,10,1,1,1\n1,2,50,50,10,10,0,1,1\n\n2,1,1,0,10,10\n")
    truth = read_mot(path)
    assert truth.frames[1][0].tolist() == [1] and truth.boxes == 2


@pytest.mark.parametrize(("content", "problem"), [
    ("1,1,0,0,10,10\nframe,id,x,y,w,h\n", ("line 2: expected frame,id,x,y,w,h[,conf,class,...] numbers, got "
                                          "'frame,id,x,y,w,h'")),
    ("1,1,0,0,10\n", "line 1: expected frame,id,x,y,w,h"),
    ("1,1,0,0,0,10\n", "line 1: the box width and height must be positive, got 0 and 10"),
    ("0,1,0,0,10,10\n", "line 1: the frame must be a whole number from 1 and the id a whole number, got 0 and 1"),
    ("1,1.5,0,0,10,10\n", "the id a whole number, got 1 and 1.5"),
    ("1,1,nan,0,10,10\n", "line 1: a value is not a finite number"),
    ("1,1,0,0,10,10\n1,1,5,5,10,10\n", "line 2: id 1 appears twice in frame 1"),
    ("\n\n", "holds no box to score"),
    ("1,1,0,0,10,10,0\n", "holds no box to score"),
])
def test_bad_ground_truth_rows_are_one_line_errors_naming_the_file(tmp_path, content, problem) -> None:
    path = tmp_path / "gt.txt"
    path.write_text(content)
    with pytest.raises(InputFileError, match="^" + str(path).replace("\\", "\\\\") + ": ") as caught:
        read_mot(path)
    assert problem in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_or_binary_file(tmp_path) -> None:
    with pytest.raises(InputFileError, match="no such MOTChallenge file"):
        read_mot(tmp_path / "nope.txt")
    (tmp_path / "gt.bin").write_bytes(bytes([0xFF, 0xFE, 0x00, 0x81]) * 10)
    with pytest.raises(InputFileError, match="is not a text file"):
        read_mot(tmp_path / "gt.bin")


def test_frames_without_tracks_count_as_misses() -> None:
    """Frames the tracker never reported still count: evaluating over the ground truth's length."""
    truth = {1: (np.array([1]), np.array([[0.0, 0.0, 10.0, 10.0]])), 2: (np.array([1]), np.array([[1.0, 0, 10, 10]]))}
    from dfine.predict.mot import MotSequence

    metrics = evaluate_tracking(MotSequence(truth), {1: truth[1]})
    assert metrics.FN == 1 and metrics.TP == 1 and metrics.frames == 2
