"""``dfine export --model M --format NAME``: a deployable file, checked against PyTorch as it is written. The
formats are the rows of :data:`dfine.export.formats.FORMATS`."""

from __future__ import annotations

import argparse
from pathlib import Path

from dfine.export.formats import FORMATS, ExportOptions, format_named


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help=f"export to {' or '.join(row.kind for row in FORMATS)}",
        description="Export a model in deploy form with post-processing inside the graph (inputs: images float "
                    "(B,3,H,W) in [0,1], orig_target_sizes int64 (B,2) as (width, height); outputs: labels, boxes "
                    "(absolute x1,y1,x2,y2), scores; a segmentation model adds masks, each instance's mask "
                    "probabilities at 1/4 of the input size; --uncertainty adds edge_uncertainty and uncertainty). "
                    "The file is compared with PyTorch in its runtime (ONNX Runtime, OpenVINO or TensorRT) before "
                    "the command succeeds; with --int8 the quantized model's "
                    "COCO AP is compared with the float model's on the data set's validation split.")
    p.add_argument("--model", required=True, help="hub id, local model directory, .pth/.safetensors file or preset")
    p.add_argument("--format", choices=[row.name for row in FORMATS], default=FORMATS[0].name,
                   help=" or ".join(f"{row.name} ({row.help})" for row in FORMATS))
    p.add_argument("--output", default=None, help="output file (default: <model name>"
                   f"{' / '.join(row.suffix for row in FORMATS)}; a run's best/ or last.pt gives <run>-best"
                   f"{FORMATS[0].suffix} / <run>-last{FORMATS[0].suffix})")
    p.add_argument("--image-size", type=int, default=None,
                   help="square input size, multiple of 32 (default: the model's own, from a training checkpoint or "
                        "the preprocessor_config.json beside the weights, else 640)")
    p.add_argument("--batch-size", type=int, default=1, help="fixed batch size of the graph (default 1)")
    p.add_argument("--dynamic-batch", action="store_true", help="make the batch dimension dynamic")
    p.add_argument("--half", action="store_true",
                   help="fp16 backbone and encoder (ONNX: inside the graph; engine: TensorRT fp16 with "
                        "normalisation, softmax and the head kept in fp32)")
    p.add_argument("--max-batch", type=int, default=32, help="largest batch of a dynamic engine (default 32)")
    p.add_argument("--no-check", action="store_true", help="skip the checker and the comparison with PyTorch")
    p.add_argument("--uncertainty", action="store_true",
                   help="onnx, openvino: add the box uncertainty outputs edge_uncertainty (B,K,4: the standard "
                        "deviation of each edge in pixels, from the model's edge distributions) and uncertainty "
                        "(B,K: one number per box, the mean edge σ over the box's side), as dfine predict writes them")
    p.add_argument("--precision", choices=["f32", "bf16", "f16"], default=None,
                   help="openvino: the inference precision (default: the fastest this CPU runs natively whose "
                        "detections agree with PyTorch; bf16 needs AVX-512 BF16 or AMX, f16 AVX512-FP16 or AMX-FP16)")
    p.add_argument("--decoder-layers", type=int, default=None, metavar="K",
                   help="run only the first K decoder layers: faster, slightly less accurate, no retraining (D-FINE "
                        "trains every layer to predict boxes; dfine val --decoder-layers K measures the cost)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for the check and timing in OpenVINO / ONNX Runtime (default: theirs)")
    int8 = p.add_argument_group("INT8 post-training quantization (onnx: ONNX Runtime static quantization; "
                                "openvino: NNCF)")
    int8.add_argument("--int8", action="store_true",
                      help="quantize to INT8, calibrated on images of --data; the parts that lose accuracy in INT8 "
                           "(query selection, decoder, box decoding) stay in floating point")
    int8.add_argument("--data", default=None,
                      help="with --int8: the data set (YAML or folder) to calibrate on (its train split) and "
                           "evaluate on (its val split)")
    int8.add_argument("--calibration-images", type=int, default=300, metavar="N",
                      help="with --int8: images to calibrate on (default 300, spread over the train split)")
    int8.add_argument("--allow-ap-drop", type=float, default=1.0, metavar="AP",
                      help="with --int8: the largest COCO AP drop (in points, 0-100) against the float model that "
                           "is accepted (default 1.0); a larger drop fails the export and writes nothing")
    int8.add_argument("--val-split", type=float, default=0.0, metavar="F",
                      help="with --int8, for a data set without a validation split: the fraction of training "
                           "images train --val-split held out (evaluated, and not calibrated on)")
    p.set_defaults(func=run)


def _default_output(model: str, fmt: str) -> Path:
    path = Path(model.rstrip("/"))
    name = path.name or "model"
    for suffix in (".safetensors", ".pth", ".pt", ".bin"):
        name = name.removesuffix(suffix)
    if name in ("best", "last") and path.parent.name:  # runs/x/best -> x-best: every run's export its own name
        name = f"{path.parent.name}-{name}"
    return Path(f"{name}{format_named(fmt).suffix}")


def run(args: argparse.Namespace) -> int:
    from dfine.config.image_size import validate_image_size
    from dfine.errors import DFineError

    validate_image_size(args.image_size, "--image-size")
    if args.batch_size < 1 or args.max_batch < 1:
        raise DFineError("--batch-size and --max-batch must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise DFineError(f"--threads must be at least 1, got {args.threads}")
    row = format_named(args.format)
    if args.precision is not None and row.name != "openvino":
        raise DFineError(f"--precision chooses OpenVINO's inference precision: it does not apply to --format "
                         f"{row.name} (use --half for an fp16 graph)")
    if args.uncertainty and (row.name not in ("onnx", "openvino") or args.int8):
        raise DFineError("--uncertainty adds outputs to float ONNX and OpenVINO exports only, not to "
                         f"{'--int8' if args.int8 else f'--format {row.name}'} exports")
    int8 = _int8_options(args, row.name)
    output = Path(args.output) if args.output else _default_output(args.model, args.format)
    # before loading the model (maybe a download) and exporting (minutes): a missing package or a bad --output is
    # said at once
    row.require_export()
    row.check_output(output)

    from dfine.export.preprocess import check_exportable
    from dfine.model.auto import checkpoint_model_class
    from dfine.predict.predictor import load_processor

    model_class = checkpoint_model_class(args.model)
    if model_class.has_mask_head and not row.masks:
        raise DFineError(f"{args.model} is a segmentation model: its masks export to ONNX and OpenVINO only for now "
                         "(--format onnx or openvino)")
    if model_class.has_mask_head and args.uncertainty:
        raise DFineError(f"{args.model} is a segmentation model: its export has no box uncertainty outputs yet "
                         "(leave out --uncertainty)")
    model = model_class.from_pretrained(args.model)
    if args.decoder_layers is not None:
        model.set_decoder_layers(args.decoder_layers)  # the exported graph and the model it is checked against
    # the model's own preprocessing (beside its weights), at the size it was trained for unless asked otherwise;
    # its normalisation goes into the graph, so the exported file always takes [0, 1] images
    processor = load_processor(args.model, args.image_size)
    size = (processor.size["height"], processor.size["width"])
    check_exportable(processor, size, str(args.model))
    options = ExportOptions(half=args.half, dynamic_batch=args.dynamic_batch, batch_size=args.batch_size,
                            max_batch=args.max_batch, check=not args.no_check, processor=processor,
                            precision=args.precision, threads=args.threads, int8=int8,
                            uncertainty=args.uncertainty)
    print(f"wrote {row.export(model, output, size, options).summary}")
    return 0


def _int8_options(args: argparse.Namespace, fmt: str) -> object | None:
    """The INT8 request of the command line, checked before any work (None without --int8)."""
    from dfine.errors import DFineError

    given = [flag for flag, value in (("--data", args.data), ("--val-split", args.val_split)) if value]
    if not args.int8:
        if given:
            raise DFineError(f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} for INT8 quantization: "
                             "add --int8")
        return None
    if fmt not in ("onnx", "openvino"):
        raise DFineError(f"--int8 quantizes ONNX and OpenVINO exports, not --format {fmt}")
    if args.data is None:
        raise DFineError("--int8 needs --data: the data set whose images calibrate the quantization and whose "
                         "validation split measures what it costs (COCO AP)")
    if args.half:
        raise DFineError("choose one of --half and --int8")
    if args.no_check:
        raise DFineError("--int8 is checked on the data set's validation split: it cannot be combined with "
                         "--no-check")
    from dfine.export.formats import require_packages

    if fmt == "openvino":
        require_packages(("nncf",), "INT8 quantization for OpenVINO", 'pip install "dfine[int8]"')
    else:
        require_packages(("onnxruntime",), "INT8 quantization for ONNX", 'pip install "dfine[onnx]"')
    from dfine.data import resolve_dataset
    from dfine.export.int8 import Int8Options
    from dfine.predict.evaluate import exported_ap

    resolve_dataset(args.data)  # a data set that is not there is said before the model loads (maybe a download)

    return Int8Options(data=args.data, calibration_images=args.calibration_images, max_ap_drop=args.allow_ap_drop,
                       val_split=args.val_split, evaluate=exported_ap)
