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
                    "probabilities at 1/4 of the input size). The file is checked with onnx.checker and compared "
                    "with PyTorch in ONNX Runtime (or TensorRT) before the command succeeds.")
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
    row = format_named(args.format)
    output = Path(args.output) if args.output else _default_output(args.model, args.format)
    # before loading the model (maybe a download) and exporting (minutes): a missing package or a bad --output is
    # said at once
    row.require_export()
    row.check_output(output)

    from dfine.export.preprocess import check_exportable
    from dfine.predict.predictor import load_processor, model_class_for

    model_class = model_class_for(args.model)
    if model_class.has_mask_head and row.name != "onnx":
        raise DFineError(f"{args.model} is a segmentation model: its masks export to ONNX only for now (--format "
                         "onnx)")
    model = model_class.from_pretrained(args.model)
    # the model's own preprocessing (beside its weights), at the size it was trained for unless asked otherwise;
    # its normalisation goes into the graph, so the exported file always takes [0, 1] images
    processor = load_processor(args.model, args.image_size)
    size = (processor.size["height"], processor.size["width"])
    check_exportable(processor, size, str(args.model))
    options = ExportOptions(half=args.half, dynamic_batch=args.dynamic_batch, batch_size=args.batch_size,
                            max_batch=args.max_batch, check=not args.no_check, processor=processor)
    print(f"wrote {row.export(model, output, size, options).summary}")
    return 0
