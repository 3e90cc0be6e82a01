"""Test videos made with PyAV (import only where PyAV is installed)."""

from __future__ import annotations

import av
import numpy as np


def video_with_sound(path, codec: str = "aac", video_start: int = 0, frames: int = 25, fps: int = 25):
    """An MP4 (or MOV for PCM) of ``frames`` grey frames, the first at frame time ``video_start``, and a sine tone
    from time 0 to the end of the last frame."""
    container = av.open(str(path), "w")
    video = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
    video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
    layout, rate = "mono", 8000
    audio = container.add_stream(codec, rate=rate, layout=layout)
    sample_format = "fltp" if codec == "aac" else "s16"
    done = 0
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 10 * i, np.uint8), format="rgb24")
        frame.pts = video_start + i
        container.mux(video.encode(frame))
        while done < (video_start + i + 1) * rate // fps:
            tone = np.sin(np.arange(done, done + 1024) / 5.0)[None]
            chunk = av.AudioFrame.from_ndarray(tone.astype(np.float32) if sample_format == "fltp"
                                               else (tone * 9000).astype(np.int16), format=sample_format,
                                               layout=layout)
            chunk.sample_rate, chunk.pts = rate, done
            container.mux(audio.encode(chunk))
            done += 1024
    container.mux(video.encode(None))
    container.mux(audio.encode(None))
    container.close()
    return path
