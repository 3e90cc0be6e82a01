"""dfine.imaging.video: frames read back as written, upright, with one-line errors for files that are not videos."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from dfine.errors import DFineError, InputFileError

av = pytest.importorskip("av")

from videohelpers import video_with_sound  # noqa: E402

from dfine.imaging.video import VideoReader, VideoWriter, is_video_file


def _pictures(count: int, size: tuple[int, int]) -> list[Image.Image]:
    """Smooth pictures with a red block that moves one step per frame (easy on a lossy codec)."""
    pictures = []
    for i in range(count):
        picture = Image.new("RGB", size, (30, 60, 90))
        ImageDraw.Draw(picture).rectangle([4 + 4 * i, 6, 28 + 4 * i, 24], fill=(240, 20, 20))
        pictures.append(picture)
    return pictures


def _difference(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean())


@pytest.mark.parametrize("size", [(96, 64), (95, 63)])
def test_frames_round_trip(size, tmp_path) -> None:
    pictures = _pictures(5, size)
    path = tmp_path / "clip.mp4"
    with VideoWriter(path, 25) as writer:
        for picture in pictures:
            writer.write(picture)
    assert writer.frames == 5
    with VideoReader(path) as video:
        assert video.fps == 25 and video.frame_count == 5
        frames = list(video)
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    assert [f.time for f in frames] == pytest.approx([0, 0.04, 0.08, 0.12, 0.16])
    even = (size[0] + size[0] % 2, size[1] + size[1] % 2)  # 4:2:0 needs even sides: padded, never cropped
    for frame, picture in zip(frames, pictures, strict=True):
        assert frame.image.mode == "RGB" and frame.image.size == even
        assert _difference(frame.image.crop((0, 0, *size)), picture) < 6  # lossy, but the same picture
    # the moving block is where it was drawn in each frame, so frames are not reordered or repeated
    assert _difference(frames[0].image.crop((0, 0, *size)), pictures[4]) > 3 * _difference(
        frames[0].image.crop((0, 0, *size)), pictures[0])


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_frames_keep_the_times_they_are_written_at(tmp_path, codec) -> None:
    """Phones record at a variable rate: each frame keeps its own time, not its index over the average rate; with
    H.264 and with the MPEG-4 part 2 fallback of PyAV builds without libx264."""
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV has no {codec}")
    times = [0.0, 0.04, 0.2, 0.25, 0.9, 1.0]
    path = tmp_path / "variable.mp4"
    with VideoWriter(path, 30) as writer:
        writer._codec = codec
        for picture, time in zip(_pictures(len(times), (64, 48)), times, strict=True):
            writer.write(picture, time)
    with VideoReader(path) as video:
        assert [f.time for f in video] == pytest.approx(times, abs=1e-4)


def test_repeated_or_backward_times_still_make_a_playable_video(tmp_path) -> None:
    """A damaged source can repeat a time; the encoder needs strictly increasing ones, so such a frame follows its
    predecessor by one clock tick."""
    path = tmp_path / "repeated.mp4"
    with VideoWriter(path, 25) as writer:
        for picture, time in zip(_pictures(4, (64, 48)), [0.0, 0.08, 0.08, 0.04], strict=True):
            writer.write(picture, time)
    with VideoReader(path) as video:
        got = [f.time for f in video]
    assert len(got) == 4 and all(b > a for a, b in zip(got, got[1:], strict=False))
    assert got[:2] == pytest.approx([0.0, 0.08], abs=1e-4) and got[3] - got[1] < 1e-3


@pytest.mark.parametrize("rotation, transpose", [(90, Image.Transpose.ROTATE_90), (-90, Image.Transpose.ROTATE_270),
                                                 (180, Image.Transpose.ROTATE_180)])
def test_display_rotation_gives_upright_frames(rotation, transpose, tmp_path) -> None:
    """Phone videos are stored sideways with a display rotation; frames must come out as players show them."""
    path = tmp_path / "phone.mp4"
    picture = Image.new("RGB", (96, 64))
    ImageDraw.Draw(picture).rectangle([0, 0, 23, 11], fill=(255, 255, 255))  # a white corner, top left
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=10)
    stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
    stream.set_display_rotation(rotation)
    for i in range(2):
        frame = av.VideoFrame.from_image(picture)
        frame.pts = i
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
    container.close()
    with VideoReader(path) as video:
        first = next(iter(video)).image
    expected = picture.transpose(transpose)
    assert first.size == expected.size
    # the corner is 288 of 6144 pixels: in the wrong place it costs 2 * 288 * 255 / 6144 = 24 on average
    assert _difference(first, expected) < 4
    assert _difference(first, expected.transpose(Image.Transpose.ROTATE_180)) > 15


def test_files_that_are_not_videos(tmp_path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    with pytest.raises(InputFileError, match=r"notes\.mp4: cannot be read as a video") as caught:
        VideoReader(text)
    assert "\n" not in str(caught.value)
    with pytest.raises(InputFileError, match=r"missing\.mp4: no such video file"):
        VideoReader(tmp_path / "missing.mp4")
    # an interrupted copy: an MP4 keeps its index at the end, so half a file cannot be opened
    whole = tmp_path / "whole.mp4"
    with VideoWriter(whole, 10) as writer:
        for picture in _pictures(4, (64, 48)):
            writer.write(picture)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(InputFileError, match=r"cut\.mp4: cannot be read as a video"):
        list(VideoReader(cut))


def test_audio_only_file_has_no_video_stream(tmp_path) -> None:
    path = tmp_path / "sound.mp4"
    container = av.open(str(path), "w")
    stream = container.add_stream("aac", rate=8000)
    samples = np.zeros((1, 1024), dtype=np.float32)
    for i in range(4):
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 8000, i * 1024
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
    container.close()
    with pytest.raises(InputFileError, match=r"sound\.mp4: has no video stream"):
        VideoReader(path)


def test_writer_scales_a_frame_of_another_size(tmp_path) -> None:
    """A stream that changes resolution still gives one video, in the first frame's size."""
    with VideoWriter(tmp_path / "a.mp4", 10) as writer:
        writer.write(Image.new("RGB", (64, 48), (200, 30, 30)))
        writer.write(Image.new("RGB", (32, 32), (30, 200, 30)))
    with VideoReader(tmp_path / "a.mp4") as video:
        frames = [frame.image for frame in video]
    assert [f.size for f in frames] == [(64, 48), (64, 48)]
    assert _difference(frames[1], Image.new("RGB", (64, 48), (30, 200, 30))) < 6


def test_without_pyav_the_error_says_what_to_install(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    with pytest.raises(DFineError, match=r"needs PyAV: pip install av"):
        VideoReader(tmp_path / "clip.mp4")
    with pytest.raises(DFineError, match=r"needs PyAV: pip install av"):
        VideoWriter(tmp_path / "clip.mp4")


def test_is_video_file() -> None:
    assert is_video_file("a/b.MP4") and is_video_file("x.mov") and is_video_file("x.webm")
    assert not is_video_file("x.jpg") and not is_video_file("mp4")


def _annotated(source, tmp_path):
    """What dfine predict writes first: the frames alone, re-encoded."""
    silent = tmp_path / "frames.mp4"
    with VideoReader(source) as video, VideoWriter(silent, video.fps) as writer:
        for frame in video:
            writer.write(frame.image)
    return silent


def test_the_sound_is_copied_along(tmp_path) -> None:
    from dfine.imaging.video import copy_audio

    source = video_with_sound(tmp_path / "talk.mp4")
    out = tmp_path / "out.mp4"
    assert copy_audio(_annotated(source, tmp_path), source, out)
    with av.open(str(out)) as result, av.open(str(source)) as original:
        assert [s.type for s in result.streams] == ["video", "audio"]
        assert result.streams.audio[0].codec_context.name == "aac"
        copied = [bytes(p) for p in result.demux(audio=0) if p.size]
        assert copied == [bytes(p) for p in original.demux(audio=0) if p.size]  # copied, not re-encoded
    assert len(list(VideoReader(out))) == 25
    # interleaved by time: the file does not hold all video before all audio
    with av.open(str(out)) as result:
        kinds = [p.stream.type for p in result.demux() if p.size]
    assert kinds.index("audio") < len(kinds) // 2


def test_no_sound_nothing_to_write(tmp_path) -> None:
    from dfine.imaging.video import copy_audio

    silent_source = tmp_path / "silent.mp4"
    with VideoWriter(silent_source, 10) as writer:
        writer.write(Image.new("RGB", (32, 32)))
    assert not copy_audio(_annotated(silent_source, tmp_path), silent_source, tmp_path / "a.mp4")
    assert not (tmp_path / "a.mp4").exists()


def test_sound_an_mp4_cannot_hold_is_re_encoded(tmp_path) -> None:
    """The PCM of a camera's .mov becomes AAC, as long as before and in time with the frames."""
    from dfine.imaging.video import copy_audio

    pcm = video_with_sound(tmp_path / "camera.mov", codec="pcm_s16le")
    out = tmp_path / "b.mp4"
    assert copy_audio(_annotated(pcm, tmp_path), pcm, out)
    with av.open(str(out)) as result, av.open(str(pcm)) as original:
        assert [s.type for s in result.streams] == ["video", "audio"]
        assert result.streams.audio[0].codec_context.name == "aac"
        samples = sum(f.samples for f in result.decode(audio=0))
        expected = sum(f.samples for f in original.decode(audio=0))
    assert abs(samples - expected) <= 1024  # AAC works in frames of 1024 samples
    assert len(list(VideoReader(out))) == 25


def test_sound_before_the_first_frame_is_left_out(tmp_path) -> None:
    """A camera file whose video starts 0.4 s after its sound: the annotated video starts at its first frame, and
    the sound is shifted to stay in sync with it."""
    from dfine.imaging.video import copy_audio

    source = video_with_sound(tmp_path / "late.mp4", video_start=10)  # 10 frames of 25 fps
    out = tmp_path / "out.mp4"
    assert copy_audio(_annotated(source, tmp_path), source, out)
    with av.open(str(out)) as result, av.open(str(source)) as original:
        starts = [float(p.pts * p.time_base) for p in result.demux(audio=0) if p.size]
        total = sum(1 for p in original.demux(audio=0) if p.size)
    kept = len(starts)
    assert -0.13 < starts[0] <= 0.0  # the packet holding t = 0.4 s of the source now starts at about 0
    assert total - kept == pytest.approx(0.4 * 8000 / 1024, abs=1.5)  # about 3 packets of 1024 samples dropped



def test_a_second_video_stream_that_starts_earlier_does_not_move_the_sound(tmp_path) -> None:
    """The frames come from the first video stream: the sound is shifted by its start (0.4 s), not by that of a
    second stream (a cover picture, another angle) that starts at 0."""
    from dfine.imaging.video import copy_audio

    source = tmp_path / "two.mp4"
    with av.open(str(source), "w") as container:
        main, other = (container.add_stream("mpeg4", rate=25) for _ in range(2))
        for stream in (main, other):
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("aac", rate=8000, layout="mono")
        for i in range(25):
            for stream, pts in ((main, 10 + i), (other, i)):
                frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 10 * i, np.uint8), format="rgb24")
                frame.pts = pts
                container.mux(stream.encode(frame))
        for done in range(0, 35 * 8000 // 25, 1024):
            tone = av.AudioFrame.from_ndarray(np.sin(np.arange(done, done + 1024) / 5.0)[None].astype(np.float32),
                                              format="fltp", layout="mono")
            tone.sample_rate, tone.pts = 8000, done
            container.mux(audio.encode(tone))
        for stream in (main, other, audio):
            container.mux(stream.encode(None))
    out = tmp_path / "out.mp4"
    assert copy_audio(_annotated(source, tmp_path), source, out)
    with av.open(str(out)) as result, av.open(str(source)) as original:
        starts = [float(p.pts * p.time_base) for p in result.demux(audio=0) if p.size]
        total = sum(1 for p in original.demux(audio=0) if p.size)
    assert -0.13 < starts[0] <= 0.0  # the sound at 0.4 s of the source plays with the first frame
    assert total - len(starts) == pytest.approx(0.4 * 8000 / 1024, abs=1.5)  # the 0.4 s before it left out


def test_re_encoded_sound_before_the_first_frame_is_left_out(tmp_path) -> None:
    from dfine.imaging.video import copy_audio

    pcm = video_with_sound(tmp_path / "late.mov", codec="pcm_s16le", video_start=10)  # video 0.4 s after sound
    out = tmp_path / "out.mp4"
    assert copy_audio(_annotated(pcm, tmp_path), pcm, out)
    with av.open(str(out)) as result, av.open(str(pcm)) as original:
        samples = sum(f.samples for f in result.decode(audio=0))
        expected = sum(f.samples for f in original.decode(audio=0)) - int(0.4 * 8000)
    assert abs(samples - expected) <= 2048
