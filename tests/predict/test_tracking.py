"""Tracking: a tracker fed noisy detections of a synthetic clip keeps every identity, and the metrics catch
identities that are shuffled."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from trackhelpers import FRAMES, SquareDetector, frames, noisy_detections, truth_boxes

from dfine.errors import ConfigError
from dfine.predict.mot import MotSequence, evaluate_tracking
from dfine.predict.tracking import TRACKERS, Tracker, track_frames

pytest.importorskip("trackers")


def _truth() -> MotSequence:
    return MotSequence({t + 1: (ids, np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1))
                        for t, (ids, boxes) in enumerate(truth_boxes())})


def _run(name: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The tracks of tracker ``name`` over the noisy detections, as MOT frames (confirmed tracks only)."""
    tracker = Tracker(name, frame_rate=30)
    tracked = {}
    for t, (boxes, scores, labels) in enumerate(noisy_detections()):
        ids = tracker.update(boxes, scores, labels)
        assert ids.shape == (len(boxes),)
        kept = ids > 0
        tracked[t + 1] = (ids[kept], np.concatenate([boxes[kept, :2], boxes[kept, 2:] - boxes[kept, :2]], axis=1))
    return tracked


@pytest.mark.parametrize("name", [n for n in TRACKERS if n != "botsort"])
def test_every_tracker_keeps_the_identities_of_the_synthetic_clip(name: str) -> None:
    metrics = evaluate_tracking(_truth(), _run(name))
    assert metrics.IDSW == 0, metrics.as_dict()
    assert metrics.IDF1 > 0.85 and metrics.MOTA > 0.8 and metrics.HOTA > 0.6, metrics.as_dict()
    assert metrics.gt_tracks == 4 and 4 <= metrics.tracks <= 5  # a dropped box may restart one track at worst


def test_botsort_uses_the_frame_and_keeps_the_identities_too() -> None:
    tracker = Tracker("botsort", frame_rate=30)
    assert tracker.uses_frame
    tracked = {}
    for t, (picture, (boxes, scores, labels)) in enumerate(zip(frames(), noisy_detections(), strict=True)):
        ids = tracker.update(boxes, scores, labels, picture)
        kept = ids > 0
        tracked[t + 1] = (ids[kept], np.concatenate([boxes[kept, :2], boxes[kept, 2:] - boxes[kept, :2]], axis=1))
    metrics = evaluate_tracking(_truth(), tracked)
    assert metrics.IDSW == 0 and metrics.IDF1 > 0.85, metrics.as_dict()


def test_shuffled_identities_are_caught_by_the_metrics() -> None:
    """The same boxes with their ids swapped among the objects every few frames: ID switches, and IDF1 drops."""
    good = _run("bytetrack")
    rng = np.random.default_rng(1)
    shuffled = {frame: (rng.permutation(ids) if frame % 4 == 0 else ids, boxes) for frame, (ids, boxes) in good.items()}
    reference, broken = evaluate_tracking(_truth(), good), evaluate_tracking(_truth(), shuffled)
    assert broken.IDSW >= 6 > reference.IDSW
    assert broken.IDF1 < reference.IDF1 - 0.1 and broken.AssA < reference.AssA - 0.2
    assert broken.MOTA < reference.MOTA and broken.DetA == pytest.approx(reference.DetA)  # detection is the same


def test_ids_follow_the_input_order_and_count_from_one() -> None:
    tracker = Tracker("bytetrack")
    objects = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], dtype=np.float64)
    assert tracker.update(objects, [0.9, 0.9]).tolist() == [-1, -1]  # a track is confirmed on its second frame
    first = tracker.update(objects + 1, [0.9, 0.9])
    second = tracker.update((objects + 2)[::-1], [0.9, 0.9])  # the same objects, listed the other way round
    assert sorted(first.tolist()) == [1, 2] and second.tolist() == first.tolist()[::-1]
    assert tracker.update(np.zeros((0, 4)), np.zeros(0)).shape == (0,)
    tracker.reset()
    tracker.update(objects, [0.9, 0.9])
    assert sorted(tracker.update(objects, [0.9, 0.9]).tolist()) == [1, 2]  # ids count from 1 again


def test_unknown_trackers_and_options_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="unknown tracker 'deepsort': choose one of bytetrack, ocsort, botsort, "
                                          "sort, cbiou"):
        Tracker("deepsort")
    with pytest.raises(ConfigError, match="tracker sort: .*colour"):
        Tracker("sort", colour=3)
    assert Tracker("ByteTrack").name == "bytetrack"


def test_track_frames_runs_a_detector_over_frames_read_lazily() -> None:
    """What Predictor.track does, with a detector that finds the squares in the pixels: a generator of frames in,
    per frame the detections with their track ids; the classes asked for are kept."""
    read = []

    def camera():
        for picture in frames():
            read.append(picture)
            yield picture

    results = track_frames(SquareDetector(), camera(), "bytetrack", batch_size=4)
    assert not read  # nothing is read before the results are asked for
    first = next(results)
    assert len(read) == 4 and first["track_ids"].dtype == torch.int64
    rest = list(results)
    assert len(rest) == FRAMES - 1
    tracked = {}
    for t, result in enumerate([first, *rest]):
        ids = result["track_ids"].numpy()
        boxes = result["boxes"].numpy()
        kept = ids > 0
        tracked[t + 1] = (ids[kept], np.concatenate([boxes[kept, :2], boxes[kept, 2:] - boxes[kept, :2]], axis=1))
    metrics = evaluate_tracking(_truth(), tracked)
    assert metrics.IDSW == 0 and metrics.MOTA > 0.9, metrics.as_dict()
    none = list(track_frames(SquareDetector(), frames()[:3], "sort", classes=[5]))
    assert all(len(r["track_ids"]) == len(r["boxes"]) == 0 for r in none)
    with pytest.raises(ConfigError, match="unknown tracker"):
        track_frames(SquareDetector(), frames(), "nope")  # at the call, not at the first frame
