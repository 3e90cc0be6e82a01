"""``dfine info MODEL``: what a model is (size, parameters, input size, classes)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="describe a model", description="Print a model's size, parameter "
                              "count, input size and class names.")
    p.add_argument("model", help="hub id, local model directory, .pth/.safetensors file, or preset name")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dfine.inference import load_processor
    from dfine.model import DFineForObjectDetection
    from dfine.presets import size_of

    model = DFineForObjectDetection.from_pretrained(args.model)
    config = model.config
    processor = load_processor(args.model)
    size = size_of(config)
    params = sum(p.numel() for p in model.parameters())
    names = config.class_names
    print(f"model:       {args.model}")
    print(f"size:        D-FINE-{size.upper()}" if size else "size:        custom architecture")
    print(f"parameters:  {params:,} ({params / 1e6:.1f} M)")
    print(f"input size:  {processor.size['height']}x{processor.size['width']} (RGB, 0..1, stretch resize)")
    print(f"decoder:     {config.decoder_layers} layers, {config.num_queries} queries, reg_scale {config.reg_scale:g}")
    print(f"classes:     {len(names)}")
    print("             " + ", ".join(names[:20]) + (f", ... (+{len(names) - 20})" if len(names) > 20 else ""))
    return 0
