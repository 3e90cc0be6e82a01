"""``dfine predict SOURCE --model M``: detections for an image, a folder or a glob."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="detect objects in images",
                              description="Detect objects in an image, a folder of images or a glob pattern; "
                                          "write annotated images and predictions.json.")
    p.add_argument("source", help="image file, folder, or glob pattern (quote it)")
    p.add_argument("--model", required=True, help="hub id, local model directory, .pth/.safetensors file")
    p.add_argument("--threshold", type=float, default=0.5, help="minimum score to keep (default 0.5)")
    p.add_argument("--output", default="runs/predict", help="output folder (default runs/predict)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    p.add_argument("--image-size", type=int, default=None, help="square input size (default: the model's, 640)")
    p.add_argument("--half", action="store_true", help="fp16 inference (CUDA only; deploy form, head in fp32)")
    p.add_argument("--compile", action="store_true", help="deploy form + torch.compile (first batch compiles)")
    p.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch",
                   help="torch (default) or onnxruntime (--model is then an exported .onnx file)")
    p.add_argument("--no-save-images", action="store_true", help="only write predictions.json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dfine.errors import DFineError
    from dfine.inference import Predictor, predict_source

    if args.batch_size < 1:
        raise DFineError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not 0 <= args.threshold <= 1:
        raise DFineError(f"--threshold must be between 0 and 1, got {args.threshold}")
    if args.image_size is not None and args.image_size % 32:
        raise DFineError(f"--image-size must be a multiple of 32, got {args.image_size}")
    if args.backend == "onnxruntime":
        from dfine.runtime import OnnxDetector

        if args.half or args.compile or args.image_size is not None:
            raise DFineError("--half, --compile and --image-size do not apply to --backend onnxruntime (precision "
                             "and input size are fixed at export time)")
        predictor = OnnxDetector(args.model)
    else:
        predictor = Predictor.from_pretrained(args.model, device=args.device, half=args.half,
                                              image_size=args.image_size, compile=args.compile)
    path = predict_source(predictor, args.source, args.output, threshold=args.threshold,
                          batch_size=args.batch_size, save_images=not args.no_save_images)
    print(f"wrote {path}" + ("" if args.no_save_images else f" and annotated images in {path.parent}"))
    return 0
