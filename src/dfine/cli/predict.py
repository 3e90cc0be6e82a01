"""``dfine predict SOURCE --model M``: detections for an image, a video, a folder or a glob."""

from __future__ import annotations

import argparse
from pathlib import Path

from dfine.cli.precision import add_model_run_options
from dfine.export.formats import FORMATS, backend_format, format_of

# the exported formats dfine predict runs, each by its --backend: ONNX in ONNX Runtime
_RUNS = [row for row in FORMATS if row.predicts]
_SUFFIXES = {row.backend: "/".join(row.suffixes) for row in _RUNS}

_EPILOG = """\
outputs: predictions.json holds one record per detection: file_name (the input path), image_id (the image's
0-based position in this run), category_id (the model's 0-based label index), dataset_category_id (for a model
trained by dfine on data whose category ids were not 0..C-1: the class's id there, e.g. in the COCO file),
category_name, bbox ([x, y, width, height] in pixels, clipped to the image), score and, with a PyTorch model or
an export made with --uncertainty, uncertainty (the typical edge error as a fraction of the box size) and
edge_uncertainty (the standard deviation of the left, top, right and bottom edge in pixels, from the model's edge
distributions); a segmentation model
(D-FINE-seg) adds segmentation (the instance mask as COCO run-length encoding) and draws its masks, and its
--save-coco annotations hold polygons; records of a video frame add frame (its 0-based index) and time (seconds).
Annotated images keep the input's file name when it ends in .jpg,
.jpeg, .png, .bmp or .webp; other formats are written as JPEG with .jpg added (x.tif -> x.tif.jpg); a name already
used in the run gets _1, _2, ... before the extension. Videos (.mp4, .mov, .avi, .mkv, .webm, ...; needs PyAV: pip
install av) give an annotated MP4 the same way (x.mov -> x.mov.mp4), each frame at its source time, with the
first audio track copied along. In a folder or glob, files
that cannot be read are skipped with a warning; a single unreadable file is an error."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="detect objects in images and videos",
                              description="Detect objects in an image or video, a folder of them, a glob "
                                          "pattern or an http(s) URL; write annotated images (and videos) and "
                                          "predictions.json.",
                              epilog=_EPILOG)
    p.add_argument("source", help="image or video file, folder, glob pattern (quote it), or http(s) URL of an image "
                                  "or video (downloaded for the run; records name the URL)")
    p.add_argument("--model", required=True,
                   help="hub id, local model directory, .pth/.safetensors file, or an exported "
                        f"{' / '.join(_SUFFIXES.values())} file; a preset name (dfine-n-coco ...) has random weights")
    p.add_argument("--threshold", type=float, default=0.5, help="minimum score to keep (default 0.5)")
    p.add_argument("--classes", default=None, metavar="NAMES",
                   help="keep only these classes: names or label indices, comma-separated (e.g. person,car)")
    p.add_argument("--output", default="runs/predict", help="output folder (default runs/predict)")
    add_model_run_options(p, "images (or video frames)")
    p.add_argument("--half-head", action="store_true",
                   help="with --half or --bf16: run the head (query selection, decoder, box decoding) in that "
                        "precision too; faster, notably at large batches (dfine val shows what it costs)")
    p.add_argument("--compile", action="store_true", help="deploy form + torch.compile (first batch compiles)")
    p.add_argument("--decoder-layers", type=int, default=None, metavar="K",
                   help="run only the first K decoder layers: faster, slightly less accurate, no retraining (dfine val "
                        "--decoder-layers K measures the cost; an exported file has its depth from dfine export)")
    p.add_argument("--backend", choices=["torch", *_SUFFIXES], default=None,
                   help=" or ".join(["torch", *(f"{backend} (--model is then an exported {suffixes} file)"
                                                for backend, suffixes in _SUFFIXES.items())])
                        + "; default: " + "".join(f"{backend} when --model ends in {suffixes}, "
                                                  for backend, suffixes in _SUFFIXES.items()) + "else torch")
    p.add_argument("--tile", type=int, default=None, metavar="PIXELS",
                   help="for large images with small objects: predict overlapping tiles of this size (e.g. 640) and "
                        "the whole image, and merge (dfine.predict.tiling)")
    p.add_argument("--tile-overlap", type=float, default=None, metavar="F",
                   help="with --tile: how much neighbouring tiles overlap (default 0.2)")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="for a folder: also the images and videos in its subfolders")
    p.add_argument("--save-coco", default=None, metavar="FILE",
                   help="also write the detections as a COCO annotation file listing every image (file names "
                        "relative to the source folder), to correct in a labelling tool (CVAT, Roboflow) and train on")
    p.add_argument("--show-uncertainty", action="store_true",
                   help="draw a translucent band of plus/minus one standard deviation around each box edge: wide "
                        "where the model is unsure of the edge")
    p.add_argument("--no-save-images", action="store_true",
                   help="only write predictions.json (no annotated images or videos)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dfine.config.image_size import validate_image_size
    from dfine.errors import DFineError, InputFileError
    from dfine.imaging.download import is_url
    from dfine.imaging.sources import list_images
    from dfine.imaging.video import is_video_file
    from dfine.predict.auto_label import check_label_file
    from dfine.predict.files import predict_source
    from dfine.predict.predictor import Predictor
    from dfine.predict.tiling import TiledDetector
    from dfine.utils.device import resolve_device
    from dfine.utils.files import prepare_output_dir

    if args.batch_size < 1:
        raise DFineError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not 0 <= args.threshold <= 1:
        raise DFineError(f"--threshold must be between 0 and 1, got {args.threshold}")
    validate_image_size(args.image_size, "--image-size")
    # An exported file runs in its own runtime only, so its suffix chooses (an explicit --backend torch still gets
    # Predictor's error saying so).
    exported = format_of(args.model)
    if exported is not None and not exported.predicts:
        raise InputFileError(args.model, f"dfine predict does not run {exported.kind}: predict with "
                                         f"{exported.built_from}, or time it with dfine benchmark")
    backend = args.backend or (exported.backend if exported is not None else "torch")
    runtime = backend_format(backend)  # None: PyTorch
    if runtime is not None and exported is not None and exported is not runtime:
        raise InputFileError(args.model, f"{exported.kind} runs with --backend {exported.backend}, not {backend}")
    # Before loading the model, which can mean a download: a bad --output should not cost that.
    prepare_output_dir(args.output)
    if args.save_coco is not None:
        check_label_file(args.save_coco, args.output)
    if args.tile_overlap is not None and args.tile is None:
        raise DFineError("--tile-overlap needs --tile (the tile size, e.g. --tile 640)")
    tile_overlap = 0.2 if args.tile_overlap is None else args.tile_overlap
    if args.tile is not None:
        TiledDetector(None, args.tile, tile_overlap)  # checks the options before the model loads
    # --device is an option like the others: a typo is named before the source is (as the model loader would)
    if runtime is not None:
        prepared = runtime.prepare(args.device)
    else:
        resolve_device(args.device)
    if not is_url(args.source):
        list_images(args.source, recursive=args.recursive, videos=True)  # a source without pictures fails here
    if runtime is not None:
        if (args.half or args.bf16 or args.half_head or args.compile or args.image_size is not None
                or args.decoder_layers is not None):
            raise DFineError(f"--half, --bf16, --half-head, --compile, --image-size and --decoder-layers do not apply "
                             f"to the {backend} backend (precision, input size and decoder depth are fixed at export "
                             "time)")
        predictor = runtime.open(Path(args.model), prepared, None, None).model
        if args.show_uncertainty and not getattr(predictor, "predicts_uncertainty", False):
            raise InputFileError(args.model, "has no box uncertainty outputs, so --show-uncertainty cannot draw "
                                             "them: re-export it with dfine export --uncertainty")
    else:
        predictor = Predictor.from_pretrained(args.model, device=args.device, half=args.half,
                                              image_size=args.image_size, compile=args.compile,
                                              half_head=args.half_head, bf16=args.bf16,
                                              decoder_layers=args.decoder_layers)
    if args.tile is not None:
        predictor = TiledDetector(predictor, args.tile, tile_overlap, batch_size=args.batch_size)
    result = predict_source(predictor, args.source, args.output, threshold=args.threshold,
                            batch_size=args.batch_size, save_images=not args.no_save_images,
                            progress=not args.no_progress, classes=args.classes, save_coco=args.save_coco,
                            recursive=args.recursive, show_uncertainty=args.show_uncertainty)
    inputs = []
    if result.images or not result.videos:
        inputs.append(_count(result.images, "image"))
    if result.videos:
        inputs.append(f"{_count(result.frames, 'frame')} of {_count(result.videos, 'video')}")
    summary = f"wrote {result.predictions} ({result.detections} detections in {' and '.join(inputs)})"
    annotated = [kind for kind, written in (("images", result.pictures), ("videos", result.annotated_videos))
                 if written]
    if annotated:
        summary += f" and annotated {' and '.join(annotated)} in {result.predictions.parent}"
    if result.skipped:
        kind = "file" if result.videos or any(is_video_file(e.path) for e in result.skipped) else "image"
        summary += f"; skipped {_count(len(result.skipped), 'unreadable ' + kind)} (see the warnings above)"
    if result.coco_labels is not None:
        summary += f"; COCO annotations in {result.coco_labels}"
    print(summary)
    return 0


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' if number != 1 else ''}"
