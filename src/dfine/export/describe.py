"""What ``dfine info`` prints about an exported file, read without PyTorch: an ``.onnx`` graph's or an OpenVINO
IR's inputs, outputs and the metadata :func:`dfine.export.onnx.onnx_metadata` writes (and :mod:`dfine.export.openvino`
carries into the IR); and the class-name lines it shares with the description of a model."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["class_lines", "describe_onnx", "describe_openvino"]


def class_lines(names: list[str]) -> list[str]:
    """``classes:`` and up to 20 of the names, as ``dfine info`` shows them for a model and an exported file."""
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
        raise DFineError('describing an .onnx file needs onnx: pip install "dfine[onnx]"') from None
    check_onnx_file(path)
    try:
        # the weights are not needed to describe the graph
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # noqa: BLE001 -- onnx raises many types for a bad file: not a protobuf, truncated ...
        raise InputFileError(path, f"not a readable ONNX file ({first_line(error)})") from None
    opsets = ", ".join(f"{o.domain} {o.version}" if o.domain else str(o.version) for o in proto.opset_import)
    meta = {p.key: p.value for p in proto.metadata_props}
    producer = f"{proto.producer_name} {proto.producer_version}".strip() or "unknown"
    lines = [f"model:       {path}",
             f"format:      ONNX (IR {proto.ir_version}, opset {opsets or '?'}; made by {producer})",
             f"file size:   {path.stat().st_size / 2**20:.1f} MiB"]
    lines += [f"input:       {v.name}: {_shape(v)}" for v in proto.graph.input]
    lines += [f"output:      {v.name}: {_shape(v)}" for v in proto.graph.output]
    return lines + _metadata_lines(path, meta)


def _metadata_lines(path: Path, meta: dict[str, str]) -> list[str]:
    """The lines of the dfine metadata of an exported file (ONNX metadata_props or the IR's rt_info)."""
    from dfine.errors import InputFileError

    if "dfine_version" not in meta:
        return ["metadata:    none from dfine export (not a dfine export?)"]
    batch = "dynamic" if meta.get("dynamic_batch") == "true" else "fixed"
    exported = f"top {meta.get('top_k', '?')} detections, exported by dfine {meta['dfine_version']}"
    lines = [f"precision:   {meta.get('precision', 'fp32')}, batch {batch}, {exported}"]
    if "decoder_layers" in meta:
        run, _, total = meta["decoder_layers"].partition("/")
        lines.append(f"decoder:     {run} of {total or '?'} layers run")
    if "preprocessing" in meta:
        lines.append(f"images:      {meta['preprocessing']}")
    try:
        names = json.loads(meta.get("class_names") or "[]")
    except ValueError:  # an edited or damaged file: the message names it instead of a JSON traceback
        names = None
    if not isinstance(names, list):
        raise InputFileError(path, f"its class_names metadata is not a JSON list of names: "
                                   f"{meta['class_names'][:60]!r}")
    return lines + class_lines([str(name) for name in names])


def describe_openvino(path: Path) -> list[str]:
    """The lines ``dfine info`` prints for an OpenVINO IR: inputs and outputs with shapes, the files' sizes, the
    precision the export chose, and the dfine metadata."""
    from dfine.runtime.openvino import ir_metadata, read_ir, supported_precisions

    model = read_ir(path)
    meta = ir_metadata(model)
    weights = path.with_suffix(".bin")
    sizes = f".xml {path.stat().st_size / 2**20:.1f} MiB + .bin {weights.stat().st_size / 2**20:.1f} MiB"
    lines = [f"model:       {path}", f"format:      OpenVINO IR ({sizes})"]
    lines += [f"input:       {port.get_any_name()}: {port.get_element_type().get_type_name()} "
              f"{port.get_partial_shape()}" for port in model.inputs]
    lines += [f"output:      {port.get_any_name()}: {port.get_element_type().get_type_name()} "
              f"{port.get_partial_shape()}" for port in model.outputs]
    if "inference_precision" in meta:
        lines.append(f"runs in:     {meta['inference_precision']} (OpenVINO INFERENCE_PRECISION_HINT; this CPU runs "
                     f"{', '.join(supported_precisions())})")
    return lines + _metadata_lines(path, meta)
