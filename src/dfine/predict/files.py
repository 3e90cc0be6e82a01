"""From files on disk to detections on disk: what ``dfine predict SOURCE`` does with images and videos.

:func:`predict_source` takes an image or video file, a folder, a glob or an http(s) URL, and writes
``predictions.json`` with an annotated copy of each image (and an annotated MP4 of each video); any detector with a
``predict(images, threshold)`` method and ``class_names`` fits (:class:`dfine.predict.predictor.Predictor`,
:class:`dfine.runtime.onnx.OnnxDetector`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np
from PIL import Image

from dfine.errors import DFineError, InputFileError, first_line
from dfine.imaging.decode import load_image
from dfine.imaging.download import download, is_url
from dfine.imaging.formats import unread_image_problem
from dfine.imaging.sources import list_images
from dfine.imaging.video import VideoFrame, VideoReader, VideoWriter, copy_audio, is_video_file
from dfine.predict.auto_label import CocoLabelWriter, check_label_file, common_folder
from dfine.predict.records import FrameDetections, detection_records
from dfine.utils.files import prepare_output_dir

logger = logging.getLogger("dfine")


class Detector(Protocol):
    """What :func:`predict_source` needs: :class:`dfine.predict.predictor.Predictor` and
    :class:`dfine.runtime.onnx.OnnxDetector` both fit."""

    @property
    def class_names(self) -> list[str]: ...

    def predict(self, images: list[Any], threshold: float = 0.5) -> list[dict[str, Any]]: ...


#: Annotated pictures keep the input's extension when it is one of these; other formats are written as JPEG.
PICTURE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


@dataclass
class PredictionRun:
    """What :func:`predict_source` did."""

    predictions: Path  #: the predictions.json written
    images: int  #: still images predicted
    detections: int  #: records in predictions.json
    pictures: list[Path] = field(default_factory=list)  #: annotated images written, in input order
    skipped: list[InputFileError] = field(default_factory=list)  #: unreadable files, each naming path and problem
    videos: int = 0  #: videos predicted
    frames: int = 0  #: video frames predicted (all frames of all videos)
    annotated_videos: list[Path] = field(default_factory=list)  #: annotated MP4s written, in input order
    coco_labels: Path | None = None  #: the COCO annotation file of ``save_coco``, when written


def picture_name(source: Path, used: set[str], keep: frozenset[str] = PICTURE_SUFFIXES, fallback: str = ".jpg"
                 ) -> str:
    """The file name of ``source``'s annotated copy, unique within one run.

    The input's name when its extension is in ``keep`` (:data:`PICTURE_SUFFIXES` for pictures), else the name plus
    ``fallback`` (``x.tif`` -> ``x.tif.jpg``, so it cannot meet ``x.jpg``; for videos ``x.avi`` -> ``x.avi.mp4``);
    a name already in ``used`` (compared case-insensitively, as macOS and Windows file systems do) gets ``_1``,
    ``_2``, ... before the extension. The name is added to ``used``.
    """
    name = source.name if source.suffix.lower() in keep else f"{source.name}{fallback}"
    stem, suffix = name[: -len(Path(name).suffix)], Path(name).suffix
    candidate, number = name, 0
    while candidate.casefold() in used:
        number += 1
        candidate = f"{stem}_{number}{suffix}"
    used.add(candidate.casefold())
    return candidate


class _Recorder:
    """Detections -> predictions.json records and annotated pictures, numbering images and frames across a run.

    Records go to ``stream`` as they come, one per line of a JSON list, so an hour of video (a million records)
    is never held in memory.
    """

    def __init__(self, predictor: Detector, threshold: float, stream: TextIO,
                 classes: Sequence[int] | None = None, file_names: dict[Path, str] | None = None,
                 labels: CocoLabelWriter | None = None, show_uncertainty: bool = False) -> None:
        self.predictor = predictor
        self.show_uncertainty = show_uncertainty  # draw each edge's ±σ band (when the detector gives σ)
        self.labels = labels  # still images also go to a COCO annotation file (--save-coco)
        self.file_names = file_names or {}  # what records call a file, where not its path (a downloaded URL)
        self.threshold = threshold
        self.classes = None if classes is None else np.asarray(sorted(set(classes)), dtype=np.int64)
        self.names = predictor.class_names
        self.dataset_ids = getattr(predictor, "dataset_category_ids", None)
        self.stream = stream
        self.count = 0  # records written
        self.next_id = 0

    def _write(self, record: dict[str, Any]) -> None:
        self.stream.write(("[\n" if self.count == 0 else ",\n") + json.dumps(record))
        self.count += 1

    def finish(self) -> None:
        """Close the JSON list."""
        self.stream.write("\n]\n" if self.count else "[]\n")

    def predict(self, items: Sequence[tuple[Path, Image.Image, VideoFrame | None]], draw: bool = True
                ) -> list[Image.Image | None]:
        """Predict a batch of ``(file, picture, video frame or None)``; the annotated pictures (None each when not
        ``draw``)."""
        from dfine.imaging.draw import draw_detections

        annotated: list[Image.Image | None] = []
        detections = self.predictor.predict([picture for _, picture, _ in items], self.threshold)
        for (path, picture, frame), result in zip(items, detections, strict=True):
            det = FrameDetections.from_result(result, picture.width, picture.height, self.classes)
            if self.labels is not None and frame is None:
                self.labels.add(path, picture.width, picture.height, det.boxes, det.labels, det.scores,
                                url=self.file_names.get(path), uncertainty=det.uncertainty, edges=det.edges,
                                masks=det.masks)
            where: dict[str, Any] = {"image_id": self.next_id, "file_name": self.file_names.get(path, str(path))}
            if frame is not None:
                where.update(frame=frame.index, time=round(frame.time, 3))
            for record in detection_records(where, det, self.names, self.dataset_ids):
                self._write(record)
            bands = det.edges if self.show_uncertainty else None
            annotated.append(draw_detections(picture, det.boxes, det.labels, det.scores, self.names,
                                             edge_uncertainty=bands, masks=det.masks) if draw else None)
            self.next_id += 1
        return annotated


def _run_video(recorder: _Recorder, path: Path, target: Path | None, batch_size: int, progress: bool,
                   leave_bar: bool) -> int:
    """Predict every frame of the video at ``path``, writing the annotated video to ``target`` (when not None);
    the number of frames."""
    from tqdm import tqdm

    from dfine.utils.files import atomic_write

    with VideoReader(path) as video:

        def predict_frames(writer: VideoWriter | None) -> int:
            count = 0
            with tqdm(total=video.frame_count, desc=path.name, unit="frame", leave=leave_bar,
                      disable=not progress) as bar:
                pending: list[VideoFrame] = []
                for frame in video:
                    pending.append(frame)
                    if len(pending) >= batch_size:
                        count += _predict_frames(recorder, path, pending, writer)
                        bar.update(len(pending))
                        pending = []
                if pending:
                    count += _predict_frames(recorder, path, pending, writer)
                    bar.update(len(pending))
            if count == 0:
                raise InputFileError(path, "no video frame could be decoded")
            return count

        if target is None:
            return predict_frames(None)
        frames = 0

        def write(tmp: Path) -> None:
            nonlocal frames
            silent = tmp.with_name(tmp.name + ".frames.mp4")
            try:
                with VideoWriter(silent, video.fps) as writer:
                    frames = predict_frames(writer)
                if not with_audio(silent, path, tmp):
                    silent.replace(tmp)
            finally:
                silent.unlink(missing_ok=True)

        # an interrupted run leaves no half-written video under the final name
        atomic_write(target, write)
        return frames


def with_audio(frames: Path, source: Path, output: Path) -> bool:
    """``frames`` with ``source``'s audio into ``output`` (:func:`dfine.imaging.video.copy_audio`); False, leaving the
    silent video to be kept, when there is no audio to copy or copying it fails (the annotated frames matter more)."""
    try:
        return copy_audio(frames, source, output)
    except Exception as error:  # a damaged or exotic audio track: the annotated video is kept without it
        logger.warning("%s: the audio could not be copied (%s); the annotated video has none", source,
                       first_line(error))
        output.unlink(missing_ok=True)
        return False


def _predict_frames(recorder: _Recorder, path: Path, frames: list[VideoFrame], writer: VideoWriter | None) -> int:
    annotated = recorder.predict([(path, frame.image, frame) for frame in frames], draw=writer is not None)
    if writer is not None:
        for picture, frame in zip(annotated, frames, strict=True):
            writer.write(picture, frame.time)
    return len(frames)


def class_indices(classes: str | Sequence[str | int], class_names: Sequence[str]) -> list[int]:
    """The label indices of ``classes``: names (any case) or indices, as a list or a comma-separated string
    (``"person,car"``, ``"0,2"``).

    Raises:
        DFineError: a name the model does not know (with the closest names) or an index out of range.
    """
    import difflib

    items = classes.split(",") if isinstance(classes, str) else list(classes)
    by_name: dict[str, list[int]] = {}  # a name may label several classes: each of them is kept
    for i, name in enumerate(class_names):
        by_name.setdefault(name.casefold(), []).append(i)
    indices = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        if text.casefold() in by_name:
            indices += by_name[text.casefold()]
        elif text.lstrip("-").isdecimal():
            index = int(text)
            if not class_names and index < 0:  # an export without class_names metadata: any label may occur
                raise DFineError(f"class index {index} is not a label (labels count from 0)")
            if class_names and not 0 <= index < len(class_names):
                raise DFineError(f"class index {index} is out of range: the model has {len(class_names)} classes "
                                 f"(0..{len(class_names) - 1})")
            indices.append(index)
        elif not class_names:
            raise DFineError(f"the model names no classes (its file has no class_names metadata), so {text!r} "
                             "cannot be found: give label indices, e.g. --classes 0,2")
        else:
            close = difflib.get_close_matches(text, list(class_names), n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise DFineError(f"the model has no class {text!r}{hint} (dfine info MODEL lists its classes)")
    if not indices:
        raise DFineError("no class given: name at least one, e.g. --classes person,car")
    return sorted(set(indices))


def predict_source(predictor: Detector, source: str | Path, output_dir: str | Path, threshold: float = 0.5,
                   batch_size: int = 1, save_images: bool = True, progress: bool = True,
                   classes: str | Sequence[str | int] | None = None,
                   save_coco: str | Path | None = None, recursive: bool = False,
                   show_uncertainty: bool = False) -> PredictionRun:
    """Run ``predictor`` on an image or video, a folder, a glob or an http(s) URL of an image or video (downloaded
    for the run; its records' ``file_name`` is the URL); write annotated copies and ``predictions.json``.

    ``predictions.json`` is a list with one record per detection: ``file_name`` (the input path),
    ``image_id`` (the image's 0-based position among the images, and video frames, predicted in this run, in the
    sorted order of the source), ``category_id`` (the model's 0-based label index), ``dataset_category_id`` (only
    for a model trained by dfine on a data set whose category ids were not 0..C-1: the id the class had there,
    e.g. in the COCO file), ``category_name``, ``bbox`` (``[x, y, width, height]`` in pixels of the original
    image, clipped to it) and ``score``; a model that gives box uncertainty (a D-FINE model run by
    :class:`~dfine.predict.predictor.Predictor`) adds ``uncertainty`` (one number per box) and ``edge_uncertainty``
    (the σ of its left, top, right and bottom edge in pixels; :mod:`dfine.ops.uncertainty`); a video frame's
    records add ``frame`` (its 0-based index in the video) and ``time`` (seconds from the start); a segmentation
    model's records add ``segmentation``, the instance mask as COCO run-length encoding. The layout is that of a COCO
    results file, but the image ids are this run's, so match records to a data set by ``file_name``.

    Annotated pictures are named by :func:`picture_name` and show the same clipped boxes (and a segmentation
    model's masks, filled translucently and outlined); a video's annotated frames
    go to an MP4 (``x.mp4`` keeps its name, ``x.mov`` becomes ``x.mov.mp4``). Videos need PyAV (``pip install
    av``); their frames are read upright (display rotation applied), and the first audio track is copied along
    (re-encoded to AAC when an MP4 cannot hold its codec).

    ``recursive`` also predicts the files in a folder's subfolders (annotated copies all go to ``output_dir``,
    numbered where names repeat).

    ``classes`` keeps only detections of these classes (names or label indices, see :func:`class_indices`), in
    the records and the pictures alike.

    ``show_uncertainty`` draws a translucent band of ±σ around each edge of the annotated pictures.

    ``save_coco`` also writes the still images' detections as a COCO annotation file, every image listed (see
    :mod:`dfine.predict.auto_label`): to correct in a labelling tool and train on. Video frames are left out of it.

    When the source is several files (a folder or a glob), a file that cannot be read is skipped with a warning
    naming it and listed in the result's ``skipped``; a single named file that cannot be read, or a source none
    of whose files can, raises.

    Raises:
        InputFileError: the source names no images or videos, a single file cannot be read, or ``output_dir``
            cannot be a folder.
        DFineError: no file of the source could be read.
    """
    from dfine.utils.files import atomic_write

    wanted = class_indices(classes, predictor.class_names) if classes is not None else None
    label_file = check_label_file(save_coco, output_dir) if save_coco is not None else None
    output = prepare_output_dir(output_dir)
    with local_files(source, progress, recursive) as (files, file_names):
        labels = None
        if label_file is not None:
            root = Path(source) if Path(source).is_dir() else common_folder(files)
            labels = CocoLabelWriter(predictor.class_names, getattr(predictor, "dataset_category_ids", None), root)
        job = _Job(predictor, source, files, output, threshold, batch_size, save_images, progress, wanted,
                   file_names, labels, show_uncertainty)
        # written as detections come, under a temporary name: an interrupted run leaves no partial predictions.json
        atomic_write(job.run.predictions, job.write)
    if labels is not None and label_file is not None:
        if job.has_videos:
            logger.warning("%s: video frames are not written to the annotation file, only still images",
                           label_file)
        job.run.coco_labels = labels.write(label_file)
    return job.run


@contextlib.contextmanager
def local_files(source: str | Path, progress: bool, recursive: bool = False
                ) -> Iterator[tuple[list[Path], dict[Path, str]]]:
    """The files of ``source`` and the names records give them: a URL is downloaded into a temporary folder for
    the run, and its records and errors name the URL rather than that folder."""
    if not is_url(source):
        left_out: list[Path] = []
        files = list_images(source, recursive=recursive, videos=True, left_out=left_out)
        for path in left_out:  # named as a training data set's folder names them, not dropped without a word
            logger.warning("%s: left out: %s", path, unread_image_problem(path))
        yield files, {}
        return
    url = str(source).strip()
    with tempfile.TemporaryDirectory(prefix="dfine-download-") as folder:
        path = download(url, folder, progress)
        try:
            yield [path], {path: url}
        except InputFileError as error:
            if error.path != str(path):
                raise
            raise InputFileError(url, error.problem) from None


class _Job:
    """One :func:`predict_source` run: the files in order, batching images, each video on its own."""

    def __init__(self, predictor: Detector, source: str | Path, files: list[Path], output_dir: Path,
                 threshold: float, batch_size: int, save_images: bool, progress: bool,
                 classes: list[int] | None = None, file_names: dict[Path, str] | None = None,
                 labels: CocoLabelWriter | None = None, show_uncertainty: bool = False) -> None:
        self.predictor, self.source, self.files, self.output_dir = predictor, source, files, output_dir
        self.show_uncertainty = show_uncertainty
        self.classes, self.file_names, self.labels = classes, file_names or {}, labels
        self.threshold, self.batch_size, self.save_images, self.progress = threshold, batch_size, save_images, progress
        self.run = PredictionRun(output_dir / "predictions.json", 0, 0)
        self.used_names: set[str] = set()
        self.has_videos = any(is_video_file(path) for path in files)

    def write(self, tmp: Path) -> None:
        """Predict everything, writing the records to ``tmp``."""
        with open(tmp, "w", encoding="utf-8") as stream:
            recorder = _Recorder(self.predictor, self.threshold, stream, self.classes, self.file_names,
                                 self.labels, self.show_uncertainty)
            self._predict_all(recorder)
            recorder.finish()
        run = self.run
        if run.images == 0 and run.videos == 0:
            kind = "files" if self.has_videos else "images"
            raise DFineError(f"{self.source}: none of its {len(self.files)} {kind} could be read (first: "
                             f"{run.skipped[0]})")
        run.detections = recorder.count

    def _predict_all(self, recorder: _Recorder) -> None:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        show_bar = self.progress and len(self.files) > 1
        # While a bar is shown, warnings go through tqdm so they do not break its line; otherwise logging is left
        # alone (logging_redirect_tqdm would add a console handler even where the caller configured none).
        redirect = logging_redirect_tqdm() if self.progress and (show_bar or self.has_videos) \
            else contextlib.nullcontext()
        with redirect, tqdm(total=len(self.files), desc="predict", unit="file" if self.has_videos else "img",
                            disable=not show_bar) as bar:
            pending: list[tuple[Path, Image.Image]] = []
            for path in self.files:
                if is_video_file(path):
                    if pending:  # keep image ids in the order of the files
                        self._predict_images(recorder, pending)
                        bar.update(len(pending))
                        pending = []
                    self._predict_video(recorder, path, leave_bar=not show_bar)
                    bar.update(1)
                    continue
                try:
                    pending.append((path, load_image(path)))
                except InputFileError as error:
                    self._skip(error)
                    bar.update(1)
                    continue
                if len(pending) >= self.batch_size:
                    self._predict_images(recorder, pending)
                    bar.update(len(pending))
                    pending = []
            if pending:
                self._predict_images(recorder, pending)
                bar.update(len(pending))

    def _skip(self, error: InputFileError) -> None:
        if len(self.files) == 1:
            raise error
        logger.warning("skipped %s", error)
        self.run.skipped.append(error)

    def _predict_images(self, recorder: _Recorder, batch: list[tuple[Path, Image.Image]]) -> None:
        annotated = recorder.predict([(path, image, None) for path, image in batch], draw=self.save_images)
        for (path, _), picture in zip(batch, annotated, strict=True):
            if picture is not None:
                target = self.output_dir / picture_name(path, self.used_names)
                picture.save(target)
                self.run.pictures.append(target)
        self.run.images += len(batch)

    def _predict_video(self, recorder: _Recorder, path: Path, leave_bar: bool) -> None:
        target = self.output_dir / picture_name(path, self.used_names, frozenset({".mp4"}), ".mp4")
        try:
            self.run.frames += _run_video(recorder, path, target if self.save_images else None,
                                           self.batch_size, self.progress, leave_bar)
        except InputFileError as error:
            self._skip(error)
            return
        self.run.videos += 1
        if self.save_images:
            self.run.annotated_videos.append(target)
