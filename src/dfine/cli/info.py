"""``dfine info MODEL``: what a model is (size, parameters, input size, classes), or what an exported file (a row
of :data:`dfine.export.formats.FORMATS` that can be described) takes and gives."""

from __future__ import annotations

import argparse
from pathlib import Path

from dfine.export.formats import FORMATS, format_of

# the suffixes of the exported files dfine info describes: ".onnx"
_DESCRIBED = " / ".join(suffix for row in FORMATS if row.describe is not None for suffix in row.suffixes)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help=f"describe a model or an exported {_DESCRIBED} file",
                              description="Print a model's size, parameter count, input size and class names; for "
                                          f"an exported {_DESCRIBED} file its inputs, outputs, opset and metadata.")
    p.add_argument("model",
                   help=f"hub id, local model directory, .pth/.safetensors file, preset name, or {_DESCRIBED} file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dfine.errors import InputFileError
    from dfine.export.describe import class_lines

    path = Path(args.model).expanduser()
    row = format_of(path)
    if row is not None:
        if row.describe is None:
            raise InputFileError(path, f"{row.kind} cannot be described here: run dfine info on {row.built_from}, "
                                       f"or time it with dfine benchmark --backend {row.backend}")
        print("\n".join(row.describe(path)))
        return 0

    from dfine.config.presets import size_of
    from dfine.model.auto import load_model
    from dfine.processing.input_size import model_input_size

    model = load_model(args.model)  # a segmentation checkpoint with its mask branch, as predict runs it
    config = model.config
    # the size export and benchmark default to: a training checkpoint's own size, else the processor config's
    height, width = model_input_size(args.model)
    size = size_of(config)
    params = sum(p.numel() for p in model.parameters())
    names = config.class_names
    print(f"model:       {args.model}")
    print(f"size:        D-FINE-{size.upper()}" if size else "size:        custom architecture")
    print(f"parameters:  {params:,} ({params / 1e6:.1f} M)")
    print(f"input size:  {height}x{width} (RGB, 0..1, stretch resize)")
    print(f"decoder:     {config.decoder_layers} layers, {config.num_queries} queries, reg_scale {config.reg_scale:g}")
    print("task:        instance segmentation (D-FINE-seg mask branch, masks at 1/4 of the input, "
          f"mask_dim {config.mask_dim})" if config.use_mask_head else "task:        object detection")
    print("\n".join(class_lines(names)))
    return 0
