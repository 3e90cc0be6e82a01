"""From a video (or a folder of frames) on disk to tracks on disk: what ``dfine track SOURCE`` does.

:func:`track_source` reads the frames in order, detects with a :class:`~dfine.predict.predictor.Predictor`, follows
the objects with a :class:`~dfine.predict.tracking.Tracker`, and writes, into the output folder:

* ``predictions.json``: the records of ``dfine predict`` (:mod:`dfine.predict.records`) with ``frame``, ``time``
  and ``track_id`` (null for a detection no track has taken yet);
* ``tracks.txt``: the tracks in MOTChallenge format (:func:`dfine.predict.mot.mot_line`);
* an annotated MP4 (each tracked object's box in its own colour, ``#id class score``, and a trail of its recent
  positions), with the source video's sound;
* with ground truth, ``tracking_metrics.json`` (:func:`dfine.predict.mot.evaluate_tracking`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dfine.errors import DFineError, InputFileError
from dfine.imaging.decode import load_image
from dfine.imaging.video import VideoReader, VideoWriter, is_video_file
from dfine.predict.files import class_indices, local_files, picture_name, with_audio
from dfine.predict.mot import MotSequence, TrackingMetrics, evaluate_tracking, mot_line, read_mot
from dfine.predict.records import FrameDetections, detection_records
from dfine.predict.tracking import Tracker, check_tracker_name, import_trackers
from dfine.utils.files import atomic_write, atomic_write_text, prepare_output_dir

logger = logging.getLogger("dfine")

__all__ = ["TrackingRun", "track_source"]


@dataclass
class TrackingRun:
    """What :func:`track_source` did."""

    predictions: Path  #: predictions.json
    tracks_file: Path  #: tracks.txt (MOTChallenge)
    frames: int  #: frames read
    detections: int  #: records in predictions.json
    tracks: int  #: distinct track ids
    video: Path | None = None  #: the annotated MP4, when written
    metrics: TrackingMetrics | None = None  #: the scores against the ground truth, when given
    metrics_file: Path | None = None  #: tracking_metrics.json, when written
    tracker_seconds: float = 0.0  #: time spent in the tracker's updates
    seconds: float = 0.0  #: time of the whole run (reading, detecting, tracking, drawing, writing)


def _natural_key(path: Path) -> list[Any]:
    """frame2.jpg before frame10.jpg: numbers in the name compare as numbers."""
    return [int(part) if part.isdigit() else part.casefold() for part in re.split(r"(\d+)", str(path))]


@dataclass
class _Frame:
    index: int  # 0-based position in the sequence
    time: float  # seconds from the first frame
    picture: Image.Image
    file_name: str  # what records call it: the video, or the frame's own file


class _Sequence:
    """The frames of a video file or of a list of picture files, in order."""

    def __init__(self, files: list[Path], source: str | Path, names: dict[Path, str], fps: float | None) -> None:
        self.files, self.names = files, names
        self.video = files[0] if len(files) == 1 and is_video_file(files[0]) else None
        if self.video is None:
            if len(files) == 1:
                raise InputFileError(names.get(files[0], files[0]), "is a still image: tracking needs a video, a "
                                     "folder of frames or a pattern matching them")
            videos = [f for f in files if is_video_file(f)]
            if videos:
                raise InputFileError(source, f"holds videos ({videos[0].name}, ...): track one video at a time, or "
                                     "a folder of frames only")
            self.files = sorted(files, key=_natural_key)
        self.fps = Fraction(fps).limit_denominator(1001) if fps else Fraction(30)
        self.reader = VideoReader(self.video) if self.video is not None else None
        if self.reader is not None:
            self.fps = self.reader.fps

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()

    @property
    def count(self) -> int | None:
        return self.reader.frame_count if self.reader is not None else len(self.files)

    def output_name(self, source: str | Path) -> str:
        if self.video is not None:
            return picture_name(self.video, set(), frozenset({".mp4"}), ".mp4")
        folder = Path(source)
        return f"{folder.name}.mp4" if folder.is_dir() and folder.name else "frames.mp4"

    def __iter__(self) -> Iterator[_Frame]:
        if self.reader is not None:
            assert self.video is not None
            name = self.names.get(self.video, str(self.video))
            count = 0
            for frame in self.reader:
                count += 1
                yield _Frame(frame.index, frame.time, frame.image, name)
            if count == 0:
                raise InputFileError(self.names.get(self.video, self.video), "no video frame could be decoded")
            return
        for index, path in enumerate(self.files):
            try:
                picture = load_image(path)
            except InputFileError as error:  # one damaged frame should not end an hour's run
                logger.warning("skipped %s", error)
                continue
            yield _Frame(index, index / float(self.fps), picture, str(path))


def _write_all(paths: Sequence[Path], body: Callable[[list[Path]], None]) -> None:
    """``body(temporary paths)``, then each temporary file renamed to its path: all files or none."""
    if not paths:
        body([])
        return
    atomic_write(paths[0], lambda tmp: _write_all(paths[1:], lambda rest: body([tmp, *rest])))


class _Run:
    """One :func:`track_source` pass over a sequence: records, MOT lines, the annotated frames."""

    def __init__(self, predictor: Any, tracker: Tracker, threshold: float, classes: list[int] | None,
                 trail: int, show_uncertainty: bool) -> None:
        self.predictor, self.tracker, self.threshold, self.trail = predictor, tracker, threshold, trail
        self.classes = None if classes is None else np.asarray(classes, dtype=np.int64)
        self.show_uncertainty = show_uncertainty
        self.names = predictor.class_names
        self.dataset_ids = getattr(predictor, "dataset_category_ids", None)
        self.records = self.frames = 0
        self.tracked: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # 1-based frame -> (ids, xywh boxes)
        self.trails: dict[int, deque[tuple[float, float]]] = {}
        self.last_seen: dict[int, int] = {}
        self.tracker_seconds = 0.0

    def track_batch(self, batch: list[_Frame], predictions: Any, mot: Any, writer: VideoWriter | None) -> None:
        from dfine.imaging.draw import draw_tracks

        results = self.predictor.predict([frame.picture for frame in batch], self.threshold)
        for frame, result in zip(batch, results, strict=True):
            picture = frame.picture
            det = FrameDetections.from_result(result, picture.width, picture.height, self.classes)
            start = time.perf_counter()
            ids = self.tracker.update(det.boxes, det.scores, det.labels,
                                      picture if self.tracker.uses_frame else None)
            self.tracker_seconds += time.perf_counter() - start
            where = {"image_id": frame.index, "file_name": frame.file_name, "frame": frame.index,
                     "time": round(frame.time, 3)}
            for record in detection_records(where, det, self.names, self.dataset_ids,
                                            [int(i) if i > 0 else None for i in ids.tolist()]):
                predictions.write(("[\n" if self.records == 0 else ",\n") + json.dumps(record))
                self.records += 1
            kept = ids > 0
            tracked = det.select(kept)
            for track_id, box, score, label in zip(ids[kept].tolist(), tracked.boxes, tracked.scores.tolist(),
                                                   tracked.labels.tolist(), strict=True):
                mot.write(mot_line(frame.index + 1, track_id, box, score, label))
            xywh = np.concatenate([tracked.boxes[:, :2], tracked.boxes[:, 2:] - tracked.boxes[:, :2]], axis=1)
            self.tracked[frame.index + 1] = (ids[kept], xywh)
            self._follow(frame.index, ids[kept], tracked.boxes)
            if writer is not None:
                trails = {i: list(self.trails[i]) for i in ids[kept].tolist()}
                bands = tracked.edges if self.show_uncertainty else None
                writer.write(draw_tracks(picture, tracked.boxes, tracked.labels, ids[kept], tracked.scores,
                                         self.names, trails, bands, masks=tracked.masks), frame.time)
            self.frames += 1

    def _follow(self, index: int, ids: np.ndarray, boxes: np.ndarray) -> None:
        """Each track's recent centres, for its trail; tracks unseen for a trail's length are forgotten."""
        for track_id, (x1, y1, x2, y2) in zip(ids.tolist(), boxes.tolist(), strict=True):
            self.trails.setdefault(track_id, deque(maxlen=self.trail)).append(((x1 + x2) / 2, (y1 + y2) / 2))
            self.last_seen[track_id] = index
        for track_id in [t for t, seen in self.last_seen.items() if index - seen > self.trail]:
            del self.trails[track_id], self.last_seen[track_id]


def track_source(predictor: Any, source: str | Path, output_dir: str | Path, tracker: str = "bytetrack",
                 threshold: float = 0.3, classes: str | Sequence[str | int] | None = None,
                 ground_truth: str | Path | MotSequence | None = None, batch_size: int = 1,
                 save_video: bool = True, fps: float | None = None, trail: int = 30, show_uncertainty: bool = False,
                 progress: bool = True, **tracker_options: Any) -> TrackingRun:
    """Track the objects of a video file, a folder of frames (or a glob of them) or an http(s) URL of a video.

    Args:
        predictor: a :class:`~dfine.predict.predictor.Predictor` (any detector with ``predict`` and
            ``class_names``).
        source: the video or frames. Frames of a folder are taken in natural order of their names (``f2.jpg``
            before ``f10.jpg``); a frame that cannot be read is skipped with a warning (its number stays taken).
        output_dir: where ``predictions.json``, ``tracks.txt``, the MP4 and ``tracking_metrics.json`` go.
        tracker: a :data:`~dfine.predict.tracking.TRACKERS` name.
        threshold: the detection score kept and handed to the tracker.
        classes: keep only these classes (names or label indices).
        ground_truth: a MOTChallenge file (or a :class:`MotSequence` read from one) to score the tracks against.
        batch_size: frames per forward pass.
        save_video: write the annotated MP4.
        fps: the frame rate of a folder of frames (default 30; a video has its own).
        trail: how many recent positions of a track its trail shows (and the frames a lost track's trail is kept).
        show_uncertainty: draw the ±σ band of each box edge (:mod:`dfine.ops.uncertainty`).
        progress: show a progress bar.
        **tracker_options: options of the tracker (:class:`~dfine.predict.tracking.Tracker`).

    Raises:
        InputFileError: the source is a still image, holds videos among frames, has no frame that can be decoded,
            or the ground-truth file is malformed (which line, and why).
        DFineError: an unknown tracker, class or option, or the ``trackers`` package missing.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    check_tracker_name(tracker)  # named before a download or a video is opened
    import_trackers()
    wanted = class_indices(classes, predictor.class_names) if classes is not None else None
    truth = read_mot(ground_truth) if isinstance(ground_truth, str | Path) else ground_truth
    if not isinstance(trail, int) or isinstance(trail, bool) or trail < 1:
        raise DFineError(f"trail must be a positive number of frames, got {trail!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise DFineError(f"batch_size must be a positive integer, got {batch_size!r}")
    output = prepare_output_dir(output_dir)
    predictions_path, tracks_path = output / "predictions.json", output / "tracks.txt"
    with local_files(source, progress) as (files, file_names), \
            contextlib.closing(_Sequence(files, source, file_names, fps)) as sequence:
        follower = Tracker(tracker, float(sequence.fps), **tracker_options)
        run = _Run(predictor, follower, threshold, wanted, trail, show_uncertainty)
        video_path = output / sequence.output_name(source) if save_video else None

        def body(temporary: list[Path]) -> None:
            tmp_predictions, tmp_tracks = temporary[0], temporary[1]
            silent = temporary[2].with_name(temporary[2].name + ".frames.mp4") if video_path is not None else None
            try:
                with open(tmp_predictions, "w", encoding="utf-8") as predictions, \
                        open(tmp_tracks, "w", encoding="utf-8") as mot, \
                        (VideoWriter(silent, sequence.fps) if silent is not None
                         else contextlib.nullcontext()) as writer, \
                        tqdm(total=sequence.count, desc="track", unit="frame", disable=not progress) as bar:
                    batch: list[_Frame] = []
                    for frame in sequence:
                        batch.append(frame)
                        if len(batch) >= batch_size:
                            run.track_batch(batch, predictions, mot, writer)
                            bar.update(len(batch))
                            batch = []
                    if batch:
                        run.track_batch(batch, predictions, mot, writer)
                        bar.update(len(batch))
                    if run.frames == 0:
                        raise InputFileError(source, "no frame could be read")
                    predictions.write("\n]\n" if run.records else "[]\n")
                if silent is not None and not (sequence.video is not None
                                               and with_audio(silent, sequence.video, temporary[2])):
                    silent.replace(temporary[2])
            finally:
                if silent is not None:
                    silent.unlink(missing_ok=True)

        _write_all([predictions_path, tracks_path] + ([video_path] if video_path is not None else []), body)
        last_frame = max(run.tracked, default=0)
    result = TrackingRun(predictions_path, tracks_path, run.frames, run.records,
                         len({i for ids, _ in run.tracked.values() for i in ids.tolist()}), video_path,
                         tracker_seconds=run.tracker_seconds)
    if truth is not None:
        result.metrics = evaluate_tracking(truth, run.tracked, max(last_frame, truth.last_frame))
        result.metrics_file = atomic_write_text(output / "tracking_metrics.json",
                                                json.dumps(result.metrics.as_dict(), indent=2) + "\n")
    result.seconds = time.perf_counter() - started
    return result
