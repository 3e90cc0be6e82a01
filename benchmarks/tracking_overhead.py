"""What tracking adds to the per-frame time of ``dfine predict`` on the same video.

    python benchmarks/tracking_overhead.py                          # D-FINE-N, 640, 30 frames, CPU (2 threads)
    python benchmarks/tracking_overhead.py --model runs/demo/model --frames 60 --device cuda

``predict_source`` (``dfine predict``) and ``track_source`` (``dfine track``) run on the same synthetic video with the
same :class:`~dfine.predict.predictor.Predictor`, annotated video written by both, interleaved round by round so that
a busy machine slows both alike; the medians per frame are compared, and the tracker's own update time is reported.

A model with random weights (the default, a preset) scores every query about 0.13, which would leave a tracker
nothing to do; ``--detections K`` therefore hands the tracker the K best boxes of each frame with scores spread
from 0.95 down to 0.2 (the detections still cost what the model costs). A trained model (``--model``) is used as it
is when ``--detections 0``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dfine.imaging.video import VideoWriter
from dfine.predict.files import predict_source
from dfine.predict.predictor import Predictor
from dfine.predict.track_files import track_source


class _Spread:
    """The predictor's K best boxes per frame, with scores spread over 0.95..0.2 (ranked as the model ranks them)."""

    def __init__(self, predictor: Predictor, count: int) -> None:
        self.predictor, self.count = predictor, count
        self.class_names = predictor.class_names

    def predict(self, images: list[Any], threshold: float = 0.5) -> list[dict[str, torch.Tensor]]:
        results = self.predictor.predict(images, 0.0)
        spread = []
        for result in results:
            keep = min(self.count, len(result["scores"]))
            picked = {key: value[:keep] for key, value in result.items()}
            picked["scores"] = torch.linspace(0.95, 0.2, keep)
            spread.append({key: value[picked["scores"] >= threshold] for key, value in picked.items()})
        return spread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dfine-n-coco")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--detections", type=int, default=50, help="boxes per frame handed on (0: the model's own)")
    parser.add_argument("--tracker", default="bytetrack")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from dfine.export.verify import check_images

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        # a camera panning over a structured scene: every frame differs, things move
        [scene] = check_images([(960, 540)], seed=0)
        video = root / "pan.mp4"
        with VideoWriter(video, 25) as writer:
            for i in range(args.frames):
                writer.write(scene.crop((4 * i, 2 * i, 4 * i + 640, 2 * i + 480)))
        predictor = Predictor.from_pretrained(args.model, device=args.device)
        detector: Any = _Spread(predictor, args.detections) if args.detections else predictor
        predict_source(detector, video, root / "warmup", threshold=0.3, progress=False)  # first-call costs
        times: dict[str, list[float]] = {"predict": [], "track": []}
        tracker_ms: list[float] = []
        for round_ in range(args.rounds):
            start = time.perf_counter()
            predict_source(detector, video, root / f"predict{round_}", threshold=0.3, progress=False)
            times["predict"].append((time.perf_counter() - start) / args.frames * 1000)
            start = time.perf_counter()
            run = track_source(detector, video, root / f"track{round_}", tracker=args.tracker, threshold=0.3,
                               progress=False)
            times["track"].append((time.perf_counter() - start) / args.frames * 1000)
            tracker_ms.append(run.tracker_seconds / args.frames * 1000)
        predict_ms, track_ms = statistics.median(times["predict"]), statistics.median(times["track"])
        handed = args.detections or "the model's"
        print(f"model {args.model} on {args.device} ({args.threads} threads), {args.frames} frames of 640x480, "
              f"{handed} detections per frame, tracker {args.tracker}, "
              f"{args.rounds} rounds (medians):")
        print(f"  dfine predict: {predict_ms:.1f} ms per frame")
        print(f"  dfine track:   {track_ms:.1f} ms per frame ({(track_ms / predict_ms - 1) * 100:+.1f}%), of which "
              f"{statistics.median(tracker_ms):.2f} ms in the tracker "
              f"({statistics.median(tracker_ms) / predict_ms * 100:.1f}% of predict's frame time)")
        print(f"  tracks: {run.tracks}, detections: {run.detections}")


if __name__ == "__main__":
    main()
