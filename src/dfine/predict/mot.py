"""MOTChallenge text files and tracking metrics (HOTA, MOTA, IDF1, ID switches).

A MOTChallenge file has one box per line, ``frame,id,x,y,w,h,conf,class,...``: 1-based frame number, object id,
top-left corner and size in pixels. ``dfine track`` writes its tracks that way (``conf`` the detection score,
``class`` the model's 0-based label index, then ``-1,-1`` for the unused world coordinates), and
``dfine track --gt gt.txt`` scores them against a ground-truth file of the same layout, where a 7th column of 0
marks a box to ignore (as in the MOT benchmarks) and classes are not compared (every other box is an object to
find).

The metrics are computed by the ``trackers`` package (``trackers.eval``, written to give TrackEval's numbers):
HOTA (Luiten et al. 2021, with DetA and AssA, averaged over IoU thresholds 0.05..0.95), the CLEAR MOT metrics (MOTA,
MOTP, ID switches, fragmentations; Bernardin & Stiefelhagen 2008) and the identity metrics (IDF1; Ristani et al.
2016), the last two at IoU 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from dfine.errors import InputFileError

__all__ = ["MotSequence", "TrackingMetrics", "evaluate_tracking", "mot_line", "read_mot"]


def mot_line(frame: int, track_id: int, box_xyxy: Iterable[float], score: float, label: int) -> str:
    """One line of a MOTChallenge results file (1-based ``frame``; the box as x, y, w, h)."""
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    return f"{frame},{track_id},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{score:.5f},{label},-1,-1\n"


@dataclass
class MotSequence:
    """The boxes of a MOTChallenge file by frame: ``frame -> (ids (n,), boxes (n, 4) as x, y, w, h)``."""

    frames: dict[int, tuple[np.ndarray, np.ndarray]]

    @property
    def last_frame(self) -> int:
        return max(self.frames, default=0)

    @property
    def boxes(self) -> int:
        return sum(len(ids) for ids, _ in self.frames.values())


def _row(path: Path, number: int, text: str) -> tuple[int, int, list[float], bool] | None:
    """``(frame, id, [x, y, w, h], scored)`` of one line, None for a blank line; a malformed line is a one-line
    error naming the file and line."""
    text = text.strip()
    if not text:
        return None
    fields = [f.strip() for f in text.split(",")]
    try:
        values = [float(f) for f in fields]
    except ValueError:
        values = []
    if len(values) < 6:
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise InputFileError(path, f"line {number}: expected frame,id,x,y,w,h[,conf,class,...] numbers, got "
                                   f"{shown!r}")
    if not all(math.isfinite(v) for v in values[:7]):
        raise InputFileError(path, f"line {number}: a value is not a finite number")
    frame, object_id = values[0], values[1]
    if frame != int(frame) or frame < 1 or object_id != int(object_id):
        raise InputFileError(path, f"line {number}: the frame must be a whole number from 1 and the id a whole "
                                   f"number, got {fields[0]} and {fields[1]}")
    if values[4] <= 0 or values[5] <= 0:
        raise InputFileError(path, f"line {number}: the box width and height must be positive, got {fields[4]} "
                                   f"and {fields[5]}")
    scored = len(values) < 7 or values[6] != 0
    return int(frame), int(object_id), values[2:6], scored


def read_mot(path: str | Path, stream: TextIO | None = None) -> MotSequence:
    """Read a MOTChallenge file (ground truth or tracks); rows whose 7th column is 0 are left out.

    Raises:
        InputFileError: the file is missing or unreadable, a line is malformed (which line, and why), an id appears
            twice in one frame, or the file holds no box.
    """
    path = Path(path)
    if stream is None:
        if not path.is_file():
            raise InputFileError(path, "no such MOTChallenge file" if not path.exists() else "is not a file")
        try:
            with open(path, encoding="utf-8") as handle:
                return read_mot(path, handle)
        except UnicodeDecodeError:
            raise InputFileError(path, "is not a text file (a MOTChallenge file has one box per line)") from None
        except OSError as error:
            raise InputFileError(path, f"cannot be read ({error.strerror or error})") from None
    rows: dict[int, dict[int, list[float]]] = {}
    for number, text in enumerate(stream, start=1):
        row = _row(path, number, text)
        if row is None:
            continue
        frame, object_id, box, scored = row
        boxes = rows.setdefault(frame, {})
        if object_id in boxes:
            raise InputFileError(path, f"line {number}: id {object_id} appears twice in frame {frame}")
        if scored:
            boxes[object_id] = box
        else:
            boxes[object_id] = []  # an ignored box still takes its id in the frame
    frames = {}
    for frame, boxes in rows.items():
        kept = {i: b for i, b in boxes.items() if b}
        frames[frame] = (np.asarray(list(kept), dtype=np.int64),
                         np.asarray(list(kept.values()), dtype=np.float64).reshape(-1, 4))
    sequence = MotSequence(frames)
    if sequence.boxes == 0:
        raise InputFileError(path, "holds no box to score (one line per box: frame,id,x,y,w,h,...)")
    return sequence


@dataclass
class TrackingMetrics:
    """The tracking scores of one sequence (fractions in [0, 1], MOTA can be negative; counts as integers)."""

    HOTA: float
    DetA: float
    AssA: float
    MOTA: float
    MOTP: float
    IDF1: float
    IDSW: int
    Frag: int
    TP: int
    FP: int
    FN: int
    gt_tracks: int
    tracks: int
    frames: int

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}

    def table(self) -> str:
        """Two lines: the names and the values (percentages for the scores), as the MOT benchmarks show them."""
        names = ["HOTA", "DetA", "AssA", "MOTA", "MOTP", "IDF1", "IDSW", "Frag", "FP", "FN"]
        values = [f"{getattr(self, n) * 100:.1f}" if isinstance(getattr(self, n), float) else str(getattr(self, n))
                  for n in names]
        widths = [max(len(n), len(v)) for n, v in zip(names, values, strict=True)]
        return "\n".join(["  ".join(n.rjust(w) for n, w in zip(names, widths, strict=True)),
                          "  ".join(v.rjust(w) for v, w in zip(values, widths, strict=True))])


def _contiguous(ids: Iterable[int]) -> dict[int, int]:
    return {original: index for index, original in enumerate(sorted(set(ids)))}


def evaluate_tracking(ground_truth: MotSequence, tracks: MotSequence | Mapping[int, tuple[np.ndarray, np.ndarray]],
                      frames: int | None = None) -> TrackingMetrics:
    """Score ``tracks`` against ``ground_truth`` over frames 1..``frames`` (default: the last frame of either).

    Raises:
        DFineError: the ``trackers`` package is missing.
    """
    from dfine.predict.tracking import import_trackers

    import_trackers()
    from trackers.eval import box_iou, compute_clear_metrics, compute_hota_metrics, compute_identity_metrics

    found = tracks.frames if isinstance(tracks, MotSequence) else dict(tracks)
    count = frames if frames is not None else max(ground_truth.last_frame, max(found, default=0))
    empty = (np.zeros(0, dtype=np.int64), np.zeros((0, 4)))
    truth_map = _contiguous(i for ids, _ in ground_truth.frames.values() for i in ids.tolist())
    track_map = _contiguous(i for ids, _ in found.values() for i in ids.tolist())
    gt_ids, tracker_ids, similarity = [], [], []
    for frame in range(1, count + 1):
        truth_ids, truth_boxes = ground_truth.frames.get(frame, empty)
        ids, boxes = found.get(frame, empty)
        gt_ids.append(np.asarray([truth_map[i] for i in truth_ids.tolist()], dtype=np.intp))
        tracker_ids.append(np.asarray([track_map[i] for i in ids.tolist()], dtype=np.intp))
        similarity.append(box_iou(np.asarray(truth_boxes, dtype=np.float64).reshape(-1, 4),
                                  np.asarray(boxes, dtype=np.float64).reshape(-1, 4), box_format="xywh"))
    clear = compute_clear_metrics(gt_ids, tracker_ids, similarity)
    hota = compute_hota_metrics(gt_ids, tracker_ids, similarity)
    identity = compute_identity_metrics(gt_ids, tracker_ids, similarity)
    return TrackingMetrics(
        HOTA=float(hota["HOTA"]), DetA=float(hota["DetA"]), AssA=float(hota["AssA"]), MOTA=float(clear["MOTA"]),
        MOTP=float(clear["MOTP"]), IDF1=float(identity["IDF1"]), IDSW=int(clear["IDSW"]), Frag=int(clear["Frag"]),
        TP=int(clear["CLR_TP"]), FP=int(clear["CLR_FP"]), FN=int(clear["CLR_FN"]), gt_tracks=len(truth_map),
        tracks=len(track_map), frames=count)
