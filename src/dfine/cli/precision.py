"""Options that several commands share: ``--half`` / ``--bf16`` / ``--half-head`` (``dfine val``, ``dfine benchmark``)
and the way a model is run on a stream of pictures (``dfine predict``, ``dfine track``)."""

from __future__ import annotations

import argparse


def half_precision(args: argparse.Namespace) -> str | None:
    """The body precision the flags ask for (``"float16"``, ``"bfloat16"``, or None for float32), after the checks
    both commands make: one of ``--half`` and ``--bf16`` at most, and ``--half-head`` only with one of them."""
    from dfine.errors import DFineError

    if args.half and args.bf16:
        raise DFineError("choose one of --half and --bf16")
    if args.half_head and not (args.half or args.bf16):
        raise DFineError("--half-head runs the head in the body's half precision: it needs --half or --bf16")
    return "float16" if args.half else "bfloat16" if args.bf16 else None


def add_model_run_options(parser: argparse.ArgumentParser, unit: str) -> None:
    """``--device``, ``--batch-size``, ``--image-size``, ``--half`` and ``--bf16`` as ``dfine predict`` and ``dfine
    track`` take them; ``unit`` names what a batch holds (``"images (or video frames)"``, ``"frames"``)."""
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--batch-size", type=int, default=1, help=f"{unit} per forward pass (default 1)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="square input size, a multiple of 32 (default: the model's, 640)")
    parser.add_argument("--half", action="store_true", help="fp16 inference (CUDA only; deploy form, head in fp32)")
    parser.add_argument("--bf16", action="store_true",
                        help="bfloat16 inference (CPU or CUDA; deploy form, head in fp32); on CPUs with AMX (Intel "
                             "Xeon since Sapphire Rapids) 1.3-2.6x faster than fp32 for D-FINE-S to X")
