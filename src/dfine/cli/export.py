"""``dfine export --model M --format onnx|engine``: a deployable file, checked against PyTorch as it is written."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="export to ONNX or a TensorRT engine",
        description="Export a model in deploy form with post-processing inside the graph (inputs: images float "
                    "(B,3,H,W) in [0,1], orig_target_sizes int64 (B,2) as (width, height); outputs: labels, boxes "
                    "(absolute x1,y1,x2,y2), scores). The file is checked with onnx.checker and compared with "
                    "PyTorch in ONNX Runtime (or TensorRT) before the command succeeds.")
    p.add_argument("--model", required=True, help="hub id, local model directory, .pth/.safetensors file or preset")
    p.add_argument("--format", choices=["onnx", "engine"], default="onnx",
                   help="onnx (ONNX Runtime, OpenVINO, TensorRT ...) or engine (TensorRT, needs TensorRT and CUDA)")
    p.add_argument("--output", default=None, help="output file (default: <model name>.onnx / .engine; a run's "
                   "best/ or last.pt gives <run>-best.onnx / <run>-last.onnx)")
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
    return Path(f"{name}.{fmt}")


def run(args: argparse.Namespace) -> int:
    from dfine.config.image_size import validate_image_size
    from dfine.errors import DFineError

    validate_image_size(args.image_size, "--image-size")
    if args.batch_size < 1 or args.max_batch < 1:
        raise DFineError("--batch-size and --max-batch must be at least 1")
    output = Path(args.output) if args.output else _default_output(args.model, args.format)
    # before loading the model (maybe a download) and exporting (minutes): a bad --output is said at once
    if args.format == "onnx":
        from dfine.export.onnx import check_output_path

        if output.suffix.lower() != ".onnx":
            raise DFineError(f"{output}: the output of an ONNX export must end in .onnx")
        check_output_path(output)
    if args.format == "engine":
        from dfine.export.tensorrt import check_engine_output, require_tensorrt

        require_tensorrt()  # before loading anything: say it at once when TensorRT is missing
        check_engine_output(output)

    from dfine.export.preprocess import check_exportable
    from dfine.model import DFineForObjectDetection
    from dfine.predict.predictor import load_processor

    model = DFineForObjectDetection.from_pretrained(args.model)
    # the model's own preprocessing (beside its weights), at the size it was trained for unless asked otherwise;
    # its normalisation goes into the graph, so the exported file always takes [0, 1] images
    processor = load_processor(args.model, args.image_size)
    size = (processor.size["height"], processor.size["width"])
    check_exportable(processor, size, str(args.model))
    if args.format == "onnx":
        from dfine.export.onnx import export_onnx

        result = export_onnx(model, output, size, dynamic_batch=args.dynamic_batch, half=args.half,
                             batch_size=args.batch_size, check=not args.no_check, processor=processor)
        print(f"wrote {result.summary()}")
    else:
        from dfine.export.tensorrt import export_engine

        path = export_engine(model, output, size, half=args.half, dynamic_batch=args.dynamic_batch,
                             max_batch=args.max_batch, batch_size=args.batch_size, check=not args.no_check,
                             processor=processor)
        print(f"wrote {path} (and {path.with_suffix('.onnx')})")
    return 0
