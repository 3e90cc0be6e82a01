"""Video files in and out, through PyAV (an optional dependency: ``pip install av``, or ``pip install 'dfine[video]'``).

:class:`VideoReader` hands out upright RGB frames as PIL images, so a model sees a video frame exactly as it sees a
still image; :class:`VideoWriter` encodes annotated frames to an MP4 (H.264 where PyAV's FFmpeg has it, else
MPEG-4 part 2). ``dfine predict`` uses both for a video source.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

from PIL import Image

from dfine.errors import DFineError, InputFileError, first_line
from dfine.imaging.formats import VIDEO_EXTENSIONS

logger = logging.getLogger("dfine")


# A frame rate for containers that do not say (raw streams, some AVIs): the usual camera rate.
_FALLBACK_FPS = Fraction(30)


# Frame timestamps in 1/60000 s: whole ticks for the usual rates (2002 at 29.97 fps, 2400 at 25, 1000 at 60), fine
# enough for the times of variable-rate video, and within the MPEG-4 part 2 encoder's limit (a denominator of at
# most 65535; the 90 kHz clock of MPEG-TS is refused there).
_TIME_BASE = Fraction(1, 60_000)


# Display rotations (counter-clockwise degrees, as FFmpeg reports them) -> the transpose that shows the frame upright.
_UPRIGHT = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}


def is_video_file(path: str | Path) -> bool:
    """Whether ``path``'s extension is a video container's (:data:`VIDEO_EXTENSIONS`)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _import_av() -> Any:
    try:
        import av
    except ImportError:
        raise DFineError("reading and writing videos needs PyAV: pip install av (or pip install 'dfine[video]')"
                         ) from None
    return av


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame: its 0-based position, its time in seconds from the start, and the upright RGB image."""

    index: int
    time: float
    image: Image.Image


class VideoReader:
    """The frames of a video file, upright (display rotation applied) and in RGB, one at a time.

    Use it in a ``with`` block, or call :meth:`close`::

        with VideoReader("street.mp4") as video:
            print(video.fps, video.frame_count)
            for frame in video:
                ...  # frame.index, frame.time, frame.image (PIL)

    Packets that cannot be decoded (a damaged stretch of the file) are skipped, as video players do, and counted in
    :attr:`skipped_packets`; a file cut short ends early at its last whole frame.

    Raises:
        InputFileError: the file is missing, not a video, or has no video stream.
        DFineError: PyAV is not installed.
    """

    def __init__(self, path: str | Path) -> None:
        av = _import_av()
        self.path = Path(path)
        if not self.path.is_file():
            raise InputFileError(self.path, "no such video file")
        try:
            self._container = av.open(str(self.path), mode="r")
        except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as error:
            raise InputFileError(self.path, f"cannot be read as a video ({first_line(error)})") from None
        if not self._container.streams.video:
            self._container.close()
            raise InputFileError(self.path, "has no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"  # frame-parallel decoding: decoding should not hold the model up
        self._errors = (av.error.FFmpegError,)
        self.skipped_packets = 0

    @property
    def fps(self) -> Fraction:
        """Frames per second (the container's average rate; 30 when it does not say)."""
        rate = self._stream.average_rate or self._stream.guessed_rate
        return Fraction(rate) if rate else _FALLBACK_FPS

    @property
    def frame_count(self) -> int | None:
        """The number of frames the container announces (or its duration times the rate), None when unknown."""
        if self._stream.frames:
            return int(self._stream.frames)
        if self._stream.duration and self._stream.time_base:
            return round(float(self._stream.duration * self._stream.time_base * self.fps))
        if self._container.duration:  # in microseconds
            return round(self._container.duration / 1_000_000 * float(self.fps))
        return None

    def __iter__(self) -> Iterator[VideoFrame]:
        index = 0
        for packet in self._container.demux(self._stream):
            try:
                frames = packet.decode()
            except self._errors:
                self.skipped_packets += 1
                continue
            for frame in frames:
                yield VideoFrame(index, self._seconds(frame, index), self._upright(frame))
                index += 1
        if self.skipped_packets:
            logger.warning("%s: %d damaged packet%s could not be decoded and %s skipped", self.path,
                           self.skipped_packets, "s" if self.skipped_packets != 1 else "",
                           "were" if self.skipped_packets != 1 else "was")

    def _seconds(self, frame: Any, index: int) -> float:
        if frame.pts is not None and frame.time_base:
            start = self._stream.start_time or 0
            return float((frame.pts - start) * frame.time_base)
        return index / float(self.fps)

    @staticmethod
    def _upright(frame: Any) -> Image.Image:
        image = frame.to_image()  # RGB
        # Phone videos store portrait footage sideways with a display rotation, which players (and FFmpeg's own
        # tools) apply; boxes must be in the picture people see.
        transpose = _UPRIGHT.get(int(getattr(frame, "rotation", 0) or 0) % 360)
        return image.transpose(transpose) if transpose is not None else image

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


class VideoWriter:
    """Encode RGB frames (PIL images) to an MP4 file, in the size of the first frame (later frames of another size
    are scaled to it), each at its own time when :meth:`write` is given one, else at ``fps`` frames per second.

    H.264 (libx264) where PyAV's FFmpeg has it, else MPEG-4 part 2; 4:2:0 colour, which needs even sizes, so a
    frame with an odd width or height gets one black row or column. Use it in a ``with`` block: leaving it flushes
    the encoder and closes the file.

    Args:
        path: the file to write (its extension does not matter: the container is always MP4).
        fps: frames per second, e.g. :attr:`VideoReader.fps`: the nominal rate, and the timing of frames written
            without a time.
    """

    def __init__(self, path: str | Path, fps: Fraction | float = _FALLBACK_FPS) -> None:
        av = _import_av()
        self.path = Path(path)
        # libx264 wants a rational rate; a float (29.97) becomes the nearest small fraction (30000/1001)
        self.fps = Fraction(fps).limit_denominator(1001)
        if self.fps <= 0:
            raise DFineError(f"{self.path}: the frame rate must be positive, got {fps}")
        self._codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._container = av.open(str(self.path), mode="w", format="mp4")
        self._stream: Any = None
        self._size: tuple[int, int] | None = None
        self._av = av
        self._last_pts = -1
        self.frames = 0

    def write(self, image: Image.Image, time: float | None = None) -> None:
        """Append one frame, shown ``time`` seconds after the first (:attr:`VideoFrame.time`); None: one frame
        period after the previous one. Phones record at a variable rate, and the source's own times keep the
        annotated video, and the sound copied beside it, in step with the original."""
        if self._stream is None:
            self._size = image.size
            self._stream = self._container.add_stream(self._codec, rate=self.fps)
            self._stream.codec_context.time_base = _TIME_BASE
            self._stream.width, self._stream.height = (side + side % 2 for side in image.size)
            self._stream.pix_fmt = "yuv420p"
            if self._codec == "libx264":
                self._stream.options = {"crf": "20", "preset": "veryfast"}
        elif image.size != self._size:  # a stream that changes resolution: one output size, as players scale it
            image = image.resize(self._size, Image.Resampling.BILINEAR)  # type: ignore[arg-type]
        if image.mode != "RGB":
            image = image.convert("RGB")
        if (self._stream.width, self._stream.height) != image.size:
            padded = Image.new("RGB", (self._stream.width, self._stream.height))
            padded.paste(image)
            image = padded
        frame = self._av.VideoFrame.from_image(image)
        seconds = Fraction(self.frames) / self.fps if time is None else Fraction(time)
        # strictly increasing, as the encoder requires, even where a damaged source repeats or reorders a time
        frame.pts = self._last_pts = max(round(seconds / _TIME_BASE), self._last_pts + 1)
        frame.time_base = _TIME_BASE
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and close the file (a video of no frames is an empty MP4)."""
        if self._stream is not None:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


# Audio codecs an MP4 file holds as they are (copied without re-encoding, so without loss); others (the PCM of many
# .mov/.avi camera files) are re-encoded to AAC.
_MP4_AUDIO_CODECS = frozenset({"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"})


def copy_audio(video: str | Path, source: str | Path, output: str | Path) -> bool:
    """Write ``output``: the frames of ``video`` (an MP4 whose frames start at 0, as :class:`VideoWriter` writes
    them) with the first audio track of ``source``.

    The track is copied as it is when an MP4 can hold its codec, else re-encoded to AAC. It keeps its timing
    relative to the start of ``source``'s video (sound before the first frame is left out), and packets are
    interleaved by time, as players and streaming expect. Nothing is written when ``source`` has no audio.

    Returns:
        Whether ``output`` was written.
    """
    av = _import_av()
    with av.open(str(source)) as src:
        audio = next(iter(src.streams.audio), None)
        if audio is None:
            return False
        # the annotated video starts at the first frame of the stream VideoReader reads (the first video stream,
        # not a second one or a cover picture that may start earlier): sound keeps its distance to that frame
        first = src.streams.video[0] if src.streams.video else None
        origin = Fraction(first.start_time * first.time_base) if first is not None and first.start_time else Fraction(0)
        with av.open(str(video)) as frames, av.open(str(output), mode="w", format="mp4") as out:
            video_in = frames.streams.video[0]
            video_out = out.add_stream_from_template(video_in)
            if audio.codec_context.name in _MP4_AUDIO_CODECS:
                audio_out = out.add_stream_from_template(audio)
                sound = _shifted(_packets(src.demux(audio)), origin)
            else:
                context = audio.codec_context
                audio_out = out.add_stream("aac", rate=context.sample_rate, layout=context.layout.name)
                sound = _encoded(src.decode(audio), audio_out, origin)
            _interleave(out, {video_out: _packets(frames.demux(video_in)), audio_out: sound})
    return True


def _interleave(out: Any, streams: dict[Any, Iterator[Any]]) -> None:
    """Mux the packets of each output stream's iterator (each in time order) into ``out``, earliest first."""
    heads = {stream: next(packets, None) for stream, packets in streams.items()}
    while any(packet is not None for packet in heads.values()):
        stream = min((s for s, p in heads.items() if p is not None), key=lambda s: heads[s].dts * heads[s].time_base)
        packet = heads[stream]
        heads[stream] = next(streams[stream], None)
        packet.stream = stream
        out.mux(packet)


def _packets(demuxed: Iterator[Any]) -> Iterator[Any]:
    """The packets of a demuxer that carry data and timestamps (FFmpeg ends each stream with an empty one)."""
    for packet in demuxed:
        if packet.size and packet.dts is not None and packet.pts is not None:
            yield packet


def _shifted(packets: Iterator[Any], origin: Fraction) -> Iterator[Any]:
    """Copied audio packets moved ``origin`` seconds earlier; those wholly before the new 0 are left out."""
    for packet in packets:
        if origin:
            offset = int(origin / packet.time_base)
            packet.pts, packet.dts = packet.pts - offset, packet.dts - offset
            if packet.pts + (packet.duration or 0) <= 0:
                continue
        yield packet


def _encoded(frames: Iterator[Any], stream: Any, origin: Fraction) -> Iterator[Any]:
    """Decoded audio ``frames`` encoded by ``stream`` (AAC), timed from ``origin`` seconds of the source."""
    rate = stream.codec_context.sample_rate
    position: int | None = None  # in samples on the output's clock
    for frame in frames:
        if position is None:
            start = frame.pts * frame.time_base if frame.pts is not None and frame.time_base else Fraction(0)
            position = round((start - origin) * rate)
        samples = frame.samples
        position, first = position + samples, position
        if first + samples <= 0:  # all of it before the first video frame
            continue
        frame.pts, frame.time_base = first, Fraction(1, rate)
        yield from (p for p in stream.encode(frame) if p.dts is not None)
    yield from (p for p in stream.encode(None) if p.dts is not None)
