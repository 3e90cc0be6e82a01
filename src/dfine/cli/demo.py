"""``dfine demo``: a few minutes of CPU training on synthetic shapes, then pictures of what the model learned."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="train a small model on synthetic data in a few minutes (no download, no GPU needed)",
        description="Draw a small synthetic data set (circles, squares, triangles), train D-FINE-N on it from "
                    "random weights (about 5 minutes on a 2-core CPU), evaluate it and write a 'ground truth | "
                    "prediction' picture, the training curves and the trained model. --task segment does the same for "
                    "instance segmentation: the shapes' outlines as polygon masks, D-FINE-N with D-FINE-seg's mask "
                    "branch, COCO mask AP beside box AP.")
    p.add_argument("--task", choices=("detect", "segment"), default="detect",
                   help="detect: boxes (default); segment: instance segmentation (boxes and masks)")
    p.add_argument("--output", default=None, help="output folder (default runs/demo, or runs/demo-segment)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, default=None,
                        help="epochs to train (default: a fixed count that takes a few minutes on a small CPU)")
    budget.add_argument("--minutes", type=float, default=None,
                        help="train for about this long instead (the epoch count is estimated on this machine)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data set and the training (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dfine.demo import run_demo, run_segmentation_demo

    demo, default = (run_segmentation_demo, "runs/demo-segment") if args.task == "segment" else (run_demo, "runs/demo")
    # the demo prints the summary (AP, where the files are, what to try next)
    demo(output=args.output or default, minutes=args.minutes, epochs=args.epochs, device=args.device, seed=args.seed,
         progress=not args.quiet)
    return 0
