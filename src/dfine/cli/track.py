"""``dfine track SOURCE --model M``: objects followed from frame to frame, each with an identity."""

from __future__ import annotations

import argparse

from dfine.cli.precision import add_model_run_options

_EPILOG = """\
outputs: predictions.json holds the records of dfine predict (file_name, image_id, frame, time, category_id,
category_name, bbox, score, uncertainty, edge_uncertainty; a segmentation model's add segmentation, the mask as COCO
RLE) plus track_id (null for a detection no track has taken yet; ids count from 1); tracks.txt holds the tracks in
MOTChallenge format, one box per line: frame (from 1),id,x,y,width,height,score,class (the model's label
index),-1,-1; the annotated MP4 shows each tracked object's box (and a segmentation model's mask) in its own colour
with its id, class, score and a trail of its recent positions, with the source's sound. With --gt (a MOTChallenge
ground-truth file: frame,id,x,y,w,h[,conf,...]; rows whose conf is 0 are ignored, classes are not compared), HOTA,
MOTA, IDF1 and ID switches are printed and written to tracking_metrics.json. Tracking needs the trackers package:
pip install "dfine[track]"."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from dfine.predict.tracking import TRACKERS

    p = subparsers.add_parser("track", help="follow objects through a video, each with an id",
                              description="Detect and track objects in a video file, a folder of frames, a glob "
                                          "of frames or an http(s) URL of a video; write an annotated MP4, "
                                          "predictions.json with track ids and MOTChallenge tracks.",
                              epilog=_EPILOG)
    p.add_argument("source", help="video file, folder of frames (taken in natural order of their names), glob "
                                  "pattern (quote it) or http(s) URL of a video")
    p.add_argument("--model", required=True, help="hub id, local model directory, .pth/.safetensors file")
    # checked by dfine.predict.tracking (one line listing the choices), not by argparse, so that a wrong name gets
    # the same message here and in Python
    p.add_argument("--tracker", default="bytetrack", metavar="NAME",
                   help=f"association: {', '.join(TRACKERS)} (default bytetrack)")
    p.add_argument("--threshold", type=float, default=0.3,
                   help="minimum detection score handed to the tracker (default 0.3: ByteTrack and OC-SORT use low "
                        "scores to hold on to occluded objects)")
    p.add_argument("--classes", default=None, metavar="NAMES",
                   help="track only these classes: names or label indices, comma-separated (e.g. person,car)")
    p.add_argument("--gt", default=None, metavar="FILE",
                   help="MOTChallenge ground truth of the source: print HOTA, MOTA, IDF1 and ID switches")
    p.add_argument("--output", default="runs/track", help="output folder (default runs/track)")
    add_model_run_options(p, "frames")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate of a folder of frames (default 30; a video has its own)")
    p.add_argument("--trail", type=int, default=30, help="recent positions shown in each track's trail (default 30)")
    p.add_argument("--show-uncertainty", action="store_true",
                   help="draw a band of plus/minus one standard deviation around each box edge")
    p.add_argument("--no-save-video", action="store_true", help="write no annotated video")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dfine.config.image_size import validate_image_size
    from dfine.errors import DFineError
    from dfine.imaging.download import is_url
    from dfine.imaging.sources import list_images
    from dfine.predict.mot import read_mot
    from dfine.predict.predictor import Predictor
    from dfine.predict.track_files import track_source
    from dfine.predict.tracking import check_tracker_name, import_trackers
    from dfine.utils.device import resolve_device
    from dfine.utils.files import prepare_output_dir

    # everything that can be checked is checked before the model loads (which can mean a download)
    check_tracker_name(args.tracker)
    import_trackers()
    if args.batch_size < 1:
        raise DFineError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not 0 <= args.threshold <= 1:
        raise DFineError(f"--threshold must be between 0 and 1, got {args.threshold}")
    if args.fps is not None and not args.fps > 0:
        raise DFineError(f"--fps must be positive, got {args.fps}")
    if args.trail < 1:
        raise DFineError(f"--trail must be at least 1, got {args.trail}")
    validate_image_size(args.image_size, "--image-size")
    truth = read_mot(args.gt) if args.gt is not None else None
    prepare_output_dir(args.output)
    resolve_device(args.device)
    if not is_url(args.source):
        list_images(args.source, videos=True)  # a source without pictures fails here
    predictor = Predictor.from_pretrained(args.model, device=args.device, half=args.half, bf16=args.bf16,
                                          image_size=args.image_size)
    result = track_source(predictor, args.source, args.output, tracker=args.tracker, threshold=args.threshold,
                          classes=args.classes, ground_truth=truth, batch_size=args.batch_size,
                          save_video=not args.no_save_video, fps=args.fps, trail=args.trail,
                          show_uncertainty=args.show_uncertainty, progress=not args.no_progress)
    written = [str(result.predictions), str(result.tracks_file)] + ([str(result.video)] if result.video else [])
    print(f"{result.tracks} tracks over {result.frames} frames ({result.detections} detections); wrote "
          f"{', '.join(written)}")
    per_frame = result.tracker_seconds / max(result.frames, 1) * 1000
    share = result.tracker_seconds / result.seconds * 100 if result.seconds > 0 else 0.0
    print(f"tracking took {per_frame:.2f} ms per frame ({share:.1f}% of the run)")
    if result.metrics is not None:
        print(f"against {args.gt} ({result.metrics.gt_tracks} objects):")
        print(result.metrics.table())
        print(f"wrote {result.metrics_file}")
    return 0
