"""TensorRT engines through the TensorRT Python API, built from our ONNX export and checked against PyTorch.

fp16 engines of D-FINE built naively (``trtexec --fp16``) can collapse to empty detections (labels all 0, tiny
scores; original repository issues #44, #98). The causes are layer normalisation and softmax computed in fp16 and a
detection head whose top-k selection and box decoding are sensitive to rounding. So an fp16 engine here keeps,
with explicit precision constraints (``OBEY_PRECISION_CONSTRAINTS``):

* every normalisation layer (LayerNorm is one ``INormalizationLayer`` at opset ≥ 17) and every softmax in fp32;
* the whole head — query selection, decoder, post-processing (ONNX nodes named ``head/…`` and ``post/…`` by the
  exporter) — in fp32; only the backbone and encoder (nearly all the FLOPs) run in fp16.

fp32 engines are built without TF32, so that they agree with PyTorch to the usual 1e-3. The binding for
``orig_target_sizes`` takes whatever integer type the engine reports (int64 on TensorRT 10, int32 on older
versions, the cause of many "no detections" reports), and the runner converts to it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dfine.errors import DFineError, InputFileError

__all__ = ["TensorRTRunner", "build_engine", "export_engine", "keep_sensitive_layers_fp32", "require_tensorrt"]

logger = logging.getLogger("dfine")

NOT_INSTALLED = ("TensorRT is not installed (pip install tensorrt, on a machine with an NVIDIA GPU); "
                 "export --format onnx works everywhere")

# the builder's workspace limit, in GiB, for build_engine and export_engine
WORKSPACE_GIB = 4.0


def require_tensorrt() -> Any:
    """The ``tensorrt`` module, or a one-line :class:`DFineError` saying it is not installed."""
    try:
        import tensorrt
    except ImportError:
        raise DFineError(NOT_INSTALLED) from None
    return tensorrt


def keep_sensitive_layers_fp32(trt: Any, network: Any) -> int:
    """Constrain normalisation, softmax and all head / post-processing layers to fp32. Returns how many."""
    sensitive_types = {trt.LayerType.NORMALIZATION, trt.LayerType.SOFTMAX}
    count = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        in_head = str(layer.name).startswith(("head/", "post/"))
        if layer.type not in sensitive_types and not in_head:
            continue
        floating = [j for j in range(layer.num_outputs) if layer.get_output(j).dtype in (trt.float32, trt.float16)]
        if not floating:
            continue  # integer and boolean layers (shapes, indices) keep their types
        layer.precision = trt.float32
        for j in floating:  # e.g. top-k: fp32 values, its int32 indices untouched
            layer.set_output_type(j, trt.float32)
        count += 1
    return count


def build_engine(onnx_path: str | Path, engine_path: str | Path, fp16: bool = True,
                 batch_sizes: tuple[int, int, int] = (1, 1, 1), workspace_gib: float = WORKSPACE_GIB,
                 shown_as: str | Path | None = None) -> Path:
    """Build and write a TensorRT engine for an exported ONNX graph.

    Args:
        onnx_path: a graph written by :func:`dfine.export.onnx.export_onnx` (export it in fp32: TensorRT makes
            the fp16 engine itself).
        engine_path: where to write the serialised engine.
        fp16: fp16 backbone/encoder with the fp32 constraints of the module docstring (else fp32, no TF32).
        batch_sizes: (min, opt, max) batch of the optimisation profile, used when the graph's batch is dynamic.
        workspace_gib: builder workspace limit.
        shown_as: the ONNX file to name in errors when ``onnx_path`` is a temporary copy of it.

    Raises:
        DFineError: TensorRT missing, a parser error, or a failed build (one line).
    """
    serialized = _serialized_engine(onnx_path, fp16, batch_sizes, workspace_gib, shown_as)
    from dfine.utils.files import atomic_write

    # an interrupted write must not leave a truncated engine, which would only fail when deserialised
    return atomic_write(engine_path, lambda tmp: tmp.write_bytes(serialized))


def _serialized_engine(onnx_path: str | Path, fp16: bool, batch_sizes: tuple[int, int, int], workspace_gib: float,
                       shown_as: str | Path | None) -> bytes:
    """The engine :func:`build_engine` writes, as bytes: :func:`export_engine` writes them into a temporary file of
    its own, which is already renamed into place atomically (a second temporary file, fsync and rename inside it
    would buy nothing)."""
    trt = require_tensorrt()
    onnx_path = Path(onnx_path)
    shown = Path(shown_as) if shown_as is not None else onnx_path
    if not onnx_path.is_file():
        raise InputFileError(shown, "no such ONNX file")
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    major = int(str(getattr(trt, "__version__", "10")).split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "unknown error"
        raise DFineError(f"TensorRT cannot parse {shown}: {errors.splitlines()[0]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        kept = keep_sensitive_layers_fp32(trt, network)
        logger.info("fp16 engine: %d of %d layers constrained to fp32", kept, network.num_layers)
    profile = builder.create_optimization_profile()
    dynamic = False
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        shape = list(tensor.shape)
        if shape and shape[0] == -1:
            dynamic = True
            profile.set_shape(tensor.name, *[tuple([b] + shape[1:]) for b in batch_sizes])
    if dynamic:
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise DFineError(f"TensorRT could not build an engine from {shown} (see the TensorRT log above)")
    return bytes(serialized)


class TensorRTRunner:
    """Runs a serialised engine on CUDA with PyTorch tensors as buffers.

    ``run(images (B, 3, H, W) float32, sizes_wh (B, 2))`` -> ``(labels, boxes, scores)`` as NumPy arrays, the
    same contract as the ONNX graph.
    """

    def __init__(self, engine_path: str | Path, device: str = "cuda") -> None:
        import torch

        trt = require_tensorrt()
        if not torch.cuda.is_available():
            raise DFineError("running a TensorRT engine needs a CUDA device")
        path = Path(engine_path)
        if not path.is_file():
            raise InputFileError(path, "no such engine file")
        self.torch = torch
        self.trt = trt
        self.device = torch.device(device)
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise InputFileError(path, "not a TensorRT engine for this TensorRT version and GPU")
        self.context = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        if "images" not in self.names:
            raise InputFileError(path, f"not a dfine engine: its tensors are {self.names}, expected images, "
                                       "orig_target_sizes, labels, boxes and scores")
        # the input the engine was built for, as OnnxDetector reads it from a graph: (batch or -1, 3, H, W)
        shape = [int(d) for d in self.engine.get_tensor_shape("images")]
        self.batch: int | None = shape[0] if shape[0] > 0 else None
        self.image_size: tuple[int, int] = (shape[2], shape[3])

    def _torch_dtype(self, name: str) -> Any:
        trt, torch = self.trt, self.torch
        table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
                 trt.bool: torch.bool}
        if hasattr(trt, "int64"):
            table[trt.int64] = torch.int64
        return table[self.engine.get_tensor_dtype(name)]

    def run(self, images: Any, sizes_wh: Any) -> list[np.ndarray]:
        torch = self.torch
        inputs = {"images": torch.as_tensor(np.asarray(images, dtype=np.float32)),
                  "orig_target_sizes": torch.as_tensor(np.asarray(sizes_wh))}
        buffers = {}
        for name, value in inputs.items():
            tensor = value.to(self.device, self._torch_dtype(name)).contiguous()
            self.context.set_input_shape(name, tuple(tensor.shape))
            buffers[name] = tensor
        for name in self.names:
            if name in buffers:
                continue
            shape = tuple(self.context.get_tensor_shape(name))
            buffers[name] = torch.empty(shape, dtype=self._torch_dtype(name), device=self.device)
        for name, tensor in buffers.items():
            self.context.set_tensor_address(name, tensor.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise DFineError("TensorRT execution failed")
        stream.synchronize()
        return [buffers[name].cpu().numpy() for name in ("labels", "boxes", "scores")]

    def __call__(self, images: Any, sizes_wh: Any) -> list[np.ndarray]:
        return self.run(images, sizes_wh)


def check_engine_output(output: str | Path) -> tuple[Path, Path]:
    """The engine file and the ONNX graph written beside it, checked before any work (one-line errors): the engine
    may not end in .onnx (its graph, ``<name>.onnx``, would be the same file), and neither may be a folder."""
    from dfine.export.onnx import check_output_path

    engine_path = Path(output)
    if engine_path.suffix.lower() == ".onnx":
        raise DFineError(f"{engine_path}: the output of an engine export must not end in .onnx (the ONNX graph it "
                         "is built from is written beside it as <name>.onnx): use e.g. model.engine")
    onnx_path = engine_path.with_suffix(".onnx")
    return check_output_path(engine_path), check_output_path(onnx_path)


def export_engine(model: Any, output: str | Path, image_size: int | Sequence[int] = 640, half: bool = True,
                  dynamic_batch: bool = False, max_batch: int = 32, batch_size: int = 1, check: bool = True,
                  processor: Any = None) -> Path:
    """ONNX export (fp32, kept beside the engine) -> TensorRT engine -> check against PyTorch on CUDA.

    ``processor`` (a ``DFineImageProcessor``, default: the checkpoints') is carried into the graph as in
    :func:`dfine.export.onnx.export_onnx`, so the engine takes [0, 1] images too.

    Both files are written under temporary names and renamed only once the checks pass, so a failure leaves no
    file behind and never replaces a good one.

    Raises:
        DFineError: TensorRT missing (checked first, before any work), an output path that cannot be used, or any
            failure on the way.
    """
    require_tensorrt()
    from dfine.config.image_size import check_image_size, image_size_hw
    from dfine.export import onnx as onnx_export
    from dfine.utils.files import atomic_write

    size = image_size_hw(image_size)
    check_image_size(model.config, size, training=False)
    if max_batch < 1 or batch_size < 1:
        raise DFineError(f"max_batch and batch_size must be at least 1, got {max_batch} and {batch_size}")
    engine_path, onnx_path = check_engine_output(output)
    if processor is not None:
        from dfine.export.preprocess import check_exportable

        check_exportable(processor, size, "the model")
    batches = (1, min(max_batch, 8), max_batch) if dynamic_batch else (batch_size,) * 3
    # two images show a batch mix-up, but a dynamic engine's profile may allow only one
    check_batch = min(2, max_batch) if dynamic_batch else batch_size

    def write_engine(onnx_tmp: Path, engine_tmp: Path) -> None:
        # engine_tmp is atomic_write's temporary file (see write_both): a plain write suffices
        engine_tmp.write_bytes(_serialized_engine(onnx_tmp, half, batches, WORKSPACE_GIB, onnx_path))
        if check:
            runner = TensorRTRunner(engine_tmp)
            report = onnx_export.compare_with_torch(model, runner.run, size, check_batch, half, "TensorRT", processor)
            logger.info("TensorRT vs PyTorch: %s", report.summary())

    def write_both(onnx_tmp: Path) -> None:
        onnx_export.write_checked_onnx(model, onnx_tmp, onnx_path, size, dynamic_batch, False, batch_size, check,
                                       None, processor)
        atomic_write(engine_path, lambda engine_tmp: write_engine(onnx_tmp, engine_tmp))

    atomic_write(onnx_path, write_both)
    return engine_path
