"""``dfine val --model M --data D``: COCO metrics of a model on a data set split (:func:`dfine.val`)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dfine.export.formats import ExportFormat


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "val", help="evaluate a model on a data set (COCO AP)",
        description="COCO box metrics (AP, AP50, AP75, APs/m/l, AR...) and per-class AP of a model on one split, "
                    "with exactly the inference preprocessing.")
    p.add_argument("--model", required=True,
                   help="hub id, model folder, .pth/.safetensors file, a last.pt, or an exported .onnx / .xml file "
                        "(run in ONNX Runtime / OpenVINO on the CPU)")
    p.add_argument("--data", required=True, help="data YAML or data set folder (COCO, Roboflow or YOLO layout)")
    p.add_argument("--split", default="val", help="split to evaluate (default val)")
    p.add_argument("--val-split", type=float, default=0.0, metavar="F",
                   help="for a data set without a validation split: the fraction of training images that "
                        "train --val-split held out; --split val evaluates those same images")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--image-size", type=int, default=None,
                   help="square input size (default: the model's preprocessor_config.json, else 640)")
    p.add_argument("--workers", type=int, default=None,
                   help="data-loading processes, 0 to load in the main process (default: up to 4, one per core)")
    p.add_argument("--half", action="store_true",
                   help="evaluate what dfine predict --half runs: deploy form, fp16 backbone and encoder, fp32 head "
                        "(CUDA)")
    p.add_argument("--bf16", action="store_true", help="the same in bfloat16 (CPU or CUDA)")
    p.add_argument("--half-head", action="store_true",
                   help="with --half or --bf16: the head (query selection, decoder, box decoding) in that "
                        "precision too")
    p.add_argument("--decoder-layers", type=int, default=None, metavar="K",
                   help="evaluate with only the first K decoder layers: what dfine predict --decoder-layers K costs "
                        "in accuracy (D-FINE trains every layer to predict boxes)")
    p.add_argument("--threads", type=int, default=None,
                   help="an exported model: CPU threads of its runtime (default: the runtime's choice)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--output", default=None,
                   help="also write metrics.json, predictions.json (COCO results), per_class_ap.png, pr_curve.png, "
                        "confusion_matrix.png, and uncertainty.json / uncertainty.png (Spearman rho between each "
                        "box's uncertainty and its localisation error) to this folder")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="with --output: the score from which a detection counts in the confusion matrix and the "
                        "uncertainty report (default 0.5, as dfine predict)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from dfine.cli.precision import half_precision
    from dfine.export.formats import format_of

    dtype = half_precision(args)
    progress = not args.json and sys.stderr.isatty()
    exported = format_of(args.model)
    if exported is not None:
        result = _val_exported(args, exported, progress)
    else:
        from dfine.engine.api import val

        result = val(args.model, args.data, split=args.split, batch_size=args.batch_size, device=args.device,
                     image_size=args.image_size, workers=args.workers, progress=progress, dtype=dtype,
                     half_head=args.half_head, output=args.output, score_threshold=args.threshold,
                     val_split=args.val_split, decoder_layers=args.decoder_layers)
    if args.json:
        print(json.dumps(result.as_dict(), allow_nan=False))
    else:
        print(result.table())
        if args.output is not None:
            written = "metrics.json, predictions.json, per_class_ap.png, pr_curve.png"
            if exported is None:
                _print_uncertainty(args.output)
                written += ", confusion_matrix.png, uncertainty.json and uncertainty.png"
            else:  # an exported graph returns no box uncertainty: no uncertainty report
                written += " and confusion_matrix.png"
            print(f"wrote {written} to {args.output}")
    return 0


def _val_exported(args: argparse.Namespace, row: ExportFormat, progress: bool) -> Any:
    """COCO metrics of an exported file in its runtime (:func:`dfine.predict.evaluate.evaluate_exported`)."""
    from pathlib import Path

    from dfine.errors import DFineError, InputFileError

    if not row.predicts:
        # said at once, not as an unknown checkpoint type after the data set was read
        raise InputFileError(args.model, f"dfine val takes a PyTorch model or an exported file it can run, not "
                                         f"{row.kind}: pass {row.built_from}")
    if args.half or args.bf16 or args.half_head or args.image_size is not None or args.decoder_layers is not None:
        raise DFineError("--half, --bf16, --half-head, --image-size and --decoder-layers do not apply to an exported "
                         "file (its precision, input size and decoder depth are fixed at export time)")
    if args.threads is not None and args.threads < 1:
        raise DFineError(f"--threads must be at least 1, got {args.threads}")
    from dfine.predict.evaluate import evaluate_exported

    prepared = row.prepare(args.device)
    detector = row.open(Path(args.model), prepared, args.threads, None).model
    return evaluate_exported(detector, args.data, args.split, batch_size=args.batch_size, workers=args.workers,
                             progress=progress, val_split=args.val_split, output=args.output,
                             score_threshold=args.threshold)


def _print_uncertainty(output: str) -> None:
    """The line of uncertainty.json that says whether box uncertainty tracks localisation error."""
    import json
    from pathlib import Path

    path = Path(output).expanduser() / "uncertainty.json"
    if not path.is_file():
        return
    report = json.loads(path.read_text())
    rho = report.get("spearman_rho")
    shown = "n/a (too few matched detections)" if rho is None else f"{rho:.3f}"
    print(f"box uncertainty vs localisation error (1 - IoU): Spearman rho = {shown} over {report['detections']} "
          f"detections scoring >= {report['score_threshold']:g}")
