"""The ``--half`` / ``--bf16`` / ``--half-head`` options that ``dfine val`` and ``dfine benchmark`` share."""

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
