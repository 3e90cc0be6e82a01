"""``dfine info MODEL``: what a model is (size, parameters, input size, classes), or what an exported ``.onnx``
file takes and gives."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="describe a model or an exported .onnx file",
                              description="Print a model's size, parameter count, input size and class names; for "
                                          "an exported .onnx file its inputs, outputs, opset and metadata.")
    p.add_argument("model", help="hub id, local model directory, .pth/.safetensors file, preset name, or .onnx file")
    p.set_defaults(func=run)


def _class_lines(names: list[str]) -> list[str]:
    shown = ", ".join(names[:20]) + (f", ... (+{len(names) - 20})" if len(names) > 20 else "")
    return [f"classes:     {len(names)}"] + ([f"             {shown}"] if names else [])


def _shape(value: object) -> str:
    """``float32 [batch, 3, 320, 320]`` for a graph input or output (an ``onnx.ValueInfoProto``)."""
    import onnx

    tensor = value.type.tensor_type  # type: ignore[attr-defined]
    dims = [str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "?"
    return f"{dtype} [{', '.join(dims)}]"


def describe_onnx(path: Path) -> list[str]:
    """The lines ``dfine info`` prints for an ``.onnx`` file: inputs and outputs with shapes, opset, file size and
    the metadata a ``dfine export`` writes (precision, classes)."""
    from dfine.errors import DFineError, InputFileError, first_line
    from dfine.runtime.onnx import check_onnx_file

    try:
        import onnx
    except ImportError:
        raise DFineError("describing an .onnx file needs onnx: pip install onnx") from None
    check_onnx_file(path)
    try:
        # the weights are not needed to describe the graph
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # not a protobuf, truncated file ...
        raise InputFileError(path, f"not a readable ONNX file ({first_line(error)})") from None
    opsets = ", ".join(f"{o.domain} {o.version}" if o.domain else str(o.version) for o in proto.opset_import)
    meta = {p.key: p.value for p in proto.metadata_props}
    producer = f"{proto.producer_name} {proto.producer_version}".strip() or "unknown"
    lines = [f"model:       {path}",
             f"format:      ONNX (IR {proto.ir_version}, opset {opsets or '?'}; made by {producer})",
             f"file size:   {path.stat().st_size / 2**20:.1f} MiB"]
    lines += [f"input:       {v.name}: {_shape(v)}" for v in proto.graph.input]
    lines += [f"output:      {v.name}: {_shape(v)}" for v in proto.graph.output]
    if "dfine_version" not in meta:
        lines.append("metadata:    none from dfine export (not a dfine export?)")
        return lines
    lines.append(f"precision:   {meta.get('precision', 'fp32')}, batch "
                 f"{'dynamic' if meta.get('dynamic_batch') == 'true' else 'fixed'}, top {meta.get('top_k', '?')} "
                 f"detections, exported by dfine {meta['dfine_version']}")
    if "preprocessing" in meta:
        lines.append(f"images:      {meta['preprocessing']}")
    try:
        names = json.loads(meta.get("class_names") or "[]")
    except ValueError:  # an edited or damaged file: the message names it instead of a JSON traceback
        names = None
    if not isinstance(names, list):
        raise InputFileError(path, f"its class_names metadata is not a JSON list of names: "
                                   f"{meta['class_names'][:60]!r}")
    return lines + _class_lines([str(name) for name in names])


def run(args: argparse.Namespace) -> int:
    from dfine.errors import InputFileError

    path = Path(args.model).expanduser()
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        print("\n".join(describe_onnx(path)))
        return 0
    if suffix == ".engine":
        raise InputFileError(path, "a TensorRT engine cannot be described here: run dfine info on the .onnx it was "
                                   "built from, or time it with dfine benchmark --backend tensorrt")

    from dfine.config.presets import size_of
    from dfine.model import DFineForObjectDetection
    from dfine.processing.input_size import model_input_size

    model = DFineForObjectDetection.from_pretrained(args.model)
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
    print("\n".join(_class_lines(names)))
    return 0
