"""Identities across frames: a detector's boxes handed to a multi-object tracker, frame by frame.

The association itself (Kalman motion, IoU matching, track birth and death) is Roboflow's ``trackers`` package
(Apache-2.0; ``pip install 'dfine[track]'``), whose SORT, ByteTrack, OC-SORT, BoT-SORT and C-BIoU are clean
re-implementations of the published trackers. :class:`Tracker` wraps one of them behind NumPy arrays;
:func:`track_frames` (``Predictor.track``) runs a detector and a tracker over frames that the caller reads, e.g. a
camera stream::

    for result in predictor.track(read_camera(), tracker="bytetrack"):  # any iterable of pictures
        ...  # result["track_ids"]: one id per box, -1 for a box no track has taken yet

Track ids count from 1 in the order tracks are confirmed. The trackers are class-agnostic (a box keeps its track
when its class flickers); ``classes`` keeps only detections of those classes before tracking.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from dfine.errors import ConfigError, DFineError, first_line

if TYPE_CHECKING:  # numpy is imported where used: `dfine --help` reads TRACKERS and stays light
    import numpy as np

__all__ = ["TRACKERS", "Tracker", "check_tracker_name", "import_trackers", "track_frames"]

#: ``--tracker`` name -> the ``trackers`` class. McByte, also in the package, needs a segmentation model and is left
#: out.
TRACKERS: dict[str, str] = {"bytetrack": "ByteTrackTracker", "ocsort": "OCSORTTracker", "botsort": "BoTSORTTracker",
                            "sort": "SORTTracker", "cbiou": "CBIoUTracker"}

# BoT-SORT compensates camera motion from the picture itself (optical flow on the frame); the others warn when
# given a frame they do not use.
_USES_FRAME = frozenset({"botsort"})


def check_tracker_name(name: Any) -> str:
    """``name`` as a key of :data:`TRACKERS` (any case), or a one-line :class:`ConfigError` listing them."""
    key = str(name).strip().lower() if isinstance(name, str) else None
    if key not in TRACKERS:
        raise ConfigError(f"unknown tracker {name!r}: choose one of {', '.join(TRACKERS)}")
    return key


def import_trackers() -> Any:
    """The ``trackers`` package, or a one-line :class:`DFineError` saying how to install it."""
    try:
        import supervision  # noqa: F401  (trackers' detection container; checked here so its absence is named)
        import trackers
    except ImportError:
        raise DFineError("tracking needs the trackers package: pip install 'dfine[track]' (or pip install trackers)"
                         ) from None
    return trackers


def _bgr(picture: Any) -> np.ndarray:
    """A standardised picture (:func:`dfine.imaging.inputs.standardize_image`: RGB PIL, or float (H, W, 3) in
    [0, 1]) as the (H, W, 3) uint8 BGR array that OpenCV-based camera-motion compensation reads."""
    import numpy as np

    array = np.asarray(picture)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    return np.ascontiguousarray(array[..., 2::-1])


class Tracker:
    """One multi-object tracker, fed one frame's detections at a time.

    Args:
        name: one of :data:`TRACKERS` (default ByteTrack, which also uses low-scoring boxes to keep tracks
            through occlusions: feed it detections below the usual 0.5 threshold).
        frame_rate: frames per second of the source; the trackers keep a lost track for a time, not a number of
            frames.
        **options: passed to the ``trackers`` class (e.g. ``lost_track_buffer=60``,
            ``track_activation_threshold=0.5``, ``minimum_consecutive_frames=1``).

    Raises:
        ConfigError: an unknown tracker name or option.
        DFineError: the ``trackers`` package is not installed.
    """

    def __init__(self, name: str = "bytetrack", frame_rate: float = 30.0, **options: Any) -> None:
        self.name = check_tracker_name(name)
        package = import_trackers()
        import supervision

        self._detections = supervision.Detections
        try:
            self._tracker = getattr(package, TRACKERS[self.name])(frame_rate=float(frame_rate), **options)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"tracker {self.name}: {first_line(error)}") from None

    def update(self, boxes: Any, scores: Any, labels: Any = None, frame: Any = None) -> np.ndarray:
        """The track id of each detection of the next frame, in the order given; -1 for a detection that is not
        (yet) part of a confirmed track.

        Args:
            boxes: (N, 4) absolute ``x1, y1, x2, y2``.
            scores: (N,) confidences (ByteTrack and OC-SORT treat low and high scores differently).
            labels: (N,) class indices, or None.
            frame: the frame's picture as :func:`~dfine.imaging.inputs.standardize_image` gives it (RGB PIL or
                float array), used by BoT-SORT's camera-motion compensation.
        """
        import numpy as np

        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        count = len(boxes)
        detections = self._detections(
            xyxy=boxes, confidence=np.asarray(scores, dtype=np.float32).reshape(-1),
            class_id=(np.zeros(count, dtype=np.int64) if labels is None
                      else np.asarray(labels, dtype=np.int64).reshape(-1)),
            data={"index": np.arange(count)})  # the trackers reorder detections: the index finds each one back
        extra = {"frame": _bgr(frame)} if self.uses_frame and frame is not None else {}
        result = self._tracker.update(detections, **extra)
        ids = np.full(count, -1, dtype=np.int64)
        if len(result):
            found = np.asarray(result.tracker_id, dtype=np.int64)
            ids[np.asarray(result.data["index"], dtype=np.int64)] = np.where(found >= 0, found + 1, -1)
        return ids

    @property
    def uses_frame(self) -> bool:
        """Whether :meth:`update` looks at the frame's picture (BoT-SORT's camera-motion compensation)."""
        return self.name in _USES_FRAME

    def reset(self) -> None:
        """Forget every track (a new video); ids count from 1 again."""
        self._tracker.reset()


def track_frames(detector: Any, frames: Iterable[Any], tracker: str | Tracker = "bytetrack",
                 threshold: float = 0.3, classes: Sequence[int] | None = None, frame_rate: float = 30.0,
                 batch_size: int = 1, **options: Any) -> Iterator[dict[str, Any]]:
    """Detect and track: for each frame of ``frames`` (any image :meth:`Predictor.predict` takes), its detections
    (``scores``, ``labels``, ``boxes`` and, from a D-FINE model, the uncertainty entries) with ``track_ids``
    (a LongTensor, -1 for a box no track has taken yet), as soon as the frame's batch is predicted.

    Args:
        detector: a :class:`~dfine.predict.predictor.Predictor` (anything with ``predict(images, threshold)``).
        frames: the pictures in time order; a generator is read lazily, ``batch_size`` frames at a time.
        tracker: a tracker name (:data:`TRACKERS`) or a :class:`Tracker` (whose state carries on).
        threshold: the detection score kept (lower than prediction's usual 0.5: ByteTrack and OC-SORT use the low
            scores to hold on to occluded objects).
        classes: label indices to keep (None: all).
        frame_rate: frames per second, for a tracker made here.
        batch_size: frames per forward pass (the tracker still sees them one by one, in order).
        **options: options of a tracker made here (:class:`Tracker`).
    """
    # the tracker is made (its name and options checked) now, not at the first frame
    follower = tracker if isinstance(tracker, Tracker) else Tracker(tracker, frame_rate, **options)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    return _tracked(detector, frames, follower, threshold, classes, batch_size)


def _tracked(detector: Any, frames: Iterable[Any], follower: Tracker, threshold: float,
             classes: Sequence[int] | None, batch_size: int) -> Iterator[dict[str, Any]]:
    import torch

    from dfine.imaging.inputs import standardize_image

    wanted = None if classes is None else torch.as_tensor(sorted(set(classes)), dtype=torch.int64)

    def flush(batch: list[Any]) -> Iterator[dict[str, Any]]:
        pictures = [standardize_image(frame) for frame in batch]  # read once, for the detector and the tracker
        for picture, result in zip(pictures, detector.predict(pictures, threshold), strict=True):
            if wanted is not None:
                keep = torch.isin(torch.as_tensor(result["labels"]), wanted)
                result = {key: value[keep] for key, value in result.items()}
            ids = follower.update(result["boxes"], result["scores"], result["labels"], picture)
            yield {**result, "track_ids": torch.from_numpy(ids)}

    batch: list[Any] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) >= batch_size:
            yield from flush(batch)
            batch = []
    if batch:
        yield from flush(batch)
