"""``dfine benchmark --model M``: latency (median, p90), images per second, parameters and GFLOPs."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dfine.export.formats import FORMATS, ExportFormat, ExportOptions, backend_format, format_of


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "benchmark", help="measure speed, parameters and FLOPs",
        description="Time a model on random input: median and p90 latency per batch, images per second, "
                    "parameters and GFLOPs (2 FLOPs per multiply-accumulate, the paper's convention).")
    suffixes = {row.backend: "/".join(row.suffixes) for row in FORMATS}
    runners = ["torch", *(f"{backend} (an {suffix} file, or the model exported to one first)"
                          for backend, suffix in suffixes.items())]
    p.add_argument("--model", required=True, help="hub id, model directory, checkpoint or preset; or an exported "
                   f"{' / '.join(suffixes.values())} file")
    p.add_argument("--backend", choices=["torch", *suffixes], default=None,
                   help=f"what runs the model: {', '.join(runners[:-1])} or {runners[-1]}; default: "
                        + "".join(f"{backend} for an {suffix} file, " for backend, suffix in suffixes.items())
                        + "else torch")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per timed call (default: an exported file's fixed batch, else 1)")
    p.add_argument("--image-size", type=int, default=None,
                   help="square input size, multiple of 32 (default: the model's own: an exported file's, a "
                        "training checkpoint's or the preprocessor_config.json's beside the weights, else 640)")
    p.add_argument("--device", default="auto",
                   help="auto, cpu, cuda or cuda:N (" + " and ".join(
                       ["torch", *(row.backend for row in FORMATS if not row.needs_gpu)]) + " backends; default auto)")
    p.add_argument("--half", action="store_true", help="fp16 (CUDA; torch backend keeps the head in fp32)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 backbone and encoder (torch backend)")
    p.add_argument("--half-head", action="store_true",
                   help="with --half or --bf16: the head (query selection, decoder, box decoding) in that precision "
                        "too (torch backend)")
    p.add_argument("--compile", action="store_true", help="torch.compile the deployed model (torch backend)")
    p.add_argument("--cuda-graph", action="store_true", help="replay a CUDA graph (torch backend, CUDA only)")
    p.add_argument("--eager", action="store_true",
                   help="time the training-form model as loaded instead of the deploy form (torch backend)")
    p.add_argument("--precision", choices=["f32", "bf16", "f16"], default=None,
                   help="openvino backend: the inference precision (default: an .xml file's own; a model exported "
                        "here: OpenVINO's default for this CPU, bf16 where it has AVX-512 BF16 or AMX)")
    p.add_argument("--decoder-layers", type=int, default=None, metavar="K",
                   help="time the model with only its first K decoder layers (torch backend, or a model exported "
                        "here)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads, at least 1 (default: the library's choice)")
    p.add_argument("--iters", type=int, default=20, help="timed runs (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    p.set_defaults(func=run)


def _torch_runner(args: argparse.Namespace, model: Any, device: Any, size: tuple[int, int],
                  batch: int) -> tuple[Callable[[], Any], str]:
    import torch

    from dfine.errors import DFineError
    from dfine.model.deploy.fast import optimize_for_inference

    pixels = torch.rand(batch, 3, *size, device=device)
    dtype = torch.float16 if args.half else torch.bfloat16 if args.bf16 else torch.float32
    if args.eager:
        if args.compile or args.cuda_graph or args.half_head:
            raise DFineError("--eager times the model as loaded: it cannot be combined with --compile, --cuda-graph "
                             "or --half-head")
        if dtype == torch.float16 and device.type != "cuda":
            raise DFineError("--half needs a CUDA device (on the CPU use --bf16)")
        network = model.to(device, dtype).eval()
        pixels = pixels.to(dtype)
        description = f"eager (training form), {str(dtype).replace('torch.', '')}"
    else:
        network = optimize_for_inference(model, dtype=dtype, device=device, compile=args.compile,
                                         cuda_graph=args.cuda_graph, image_size=size, batch_size=batch,
                                         head_dtype=None if args.half_head else torch.float32)
        description = network.mode + (", head float32" if dtype != torch.float32 and not args.half_head else "")

    def call() -> Any:
        with torch.inference_mode():
            return network(pixels)

    return call, description


def speed_hint(args: argparse.Namespace, device_type: str) -> str | None:
    """What to add on a GPU when the torch backend runs without a CUDA graph: at small batches the forward is bound
    by Python and kernel launches there, so the numbers would understate what the model does."""
    if args.backend != "torch" or device_type != "cuda" or args.cuda_graph or args.eager:
        return None
    return ("tip: add --cuda-graph (and --half, --compile) to time the forward without Python and launch overhead; "
            "on an H100, D-FINE-L fp16 at batch 1 took 37.5 ms like this and 4.6 ms with --cuda-graph")


def _exported_file(args: argparse.Namespace, runtime: ExportFormat, model: Any, workdir: Path,
                   size: tuple[int, int], batch: int) -> Path:
    """The file to time: a fresh (unchecked) export of the model in the backend's format."""
    precision = None
    if runtime.name == "openvino":  # unchecked, so the export would keep f32: what OpenVINO itself would pick
        from dfine.runtime.openvino import default_precision

        precision = args.precision or default_precision()
    options = ExportOptions(half=args.half, batch_size=batch, check=False, precision=precision)
    return runtime.export(model, workdir / f"model{runtime.suffix}", size, options).path


def _graph_input(args: argparse.Namespace, path: Path, batch: int | None,
                 size: tuple[int, int]) -> tuple[int, tuple[int, int]]:
    """The batch and input size to feed an exported file: what its graph was exported for (an input of another
    size is rejected by the runtime); a different explicit --image-size or --batch-size is an error."""
    from dfine.errors import InputFileError

    if args.image_size is not None and (args.image_size, args.image_size) != size:
        raise InputFileError(path, f"was exported for {size[0]}x{size[1]} input, not --image-size "
                                   f"{args.image_size}: leave --image-size out or export at that size")
    if batch is not None and args.batch_size is not None and args.batch_size != batch:
        raise InputFileError(path, f"has a fixed batch of {batch}, not --batch-size {args.batch_size}: leave "
                                   "--batch-size out or export with --dynamic-batch")
    return args.batch_size or batch or 1, size


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from dfine.cli.precision import half_precision
    from dfine.config.image_size import validate_image_size
    from dfine.errors import DFineError
    from dfine.export.benchmark import count_flops, count_parameters, peak_memory_mib, time_callable
    from dfine.utils.device import resolve_device

    # an exported file runs in one runtime only, so its suffix chooses unless --backend says otherwise
    given = Path(args.model)
    exported = format_of(given)
    if args.backend is None:
        args.backend = exported.backend if exported is not None else "torch"
    runtime = backend_format(args.backend)  # None: PyTorch
    if (args.batch_size is not None and args.batch_size < 1) or args.iters < 1 or args.warmup < 0:
        raise DFineError("--batch-size and --iters must be at least 1, --warmup at least 0")
    validate_image_size(args.image_size, "--image-size")
    if args.threads is not None and args.threads < 1:
        raise DFineError(f"--threads must be at least 1, got {args.threads}")
    half_precision(args)  # the checks val makes too
    if runtime is not None and (args.compile or args.cuda_graph or args.eager or args.bf16 or args.half_head):
        raise DFineError("--compile, --cuda-graph, --eager, --bf16 and --half-head apply to the torch backend only")
    if args.precision is not None and args.backend != "openvino":
        raise DFineError("--precision chooses OpenVINO's inference precision: it applies to --backend openvino only")
    exported_given = exported is not None
    if exported is not None and runtime is None:
        raise DFineError(f"{args.model}: the torch backend needs a model, not an exported file (use --backend "
                         f"{exported.backend})")
    if exported is not None and exported is not runtime:
        raise DFineError(f"{args.model}: {exported.kind} runs with --backend {exported.backend}, not {args.backend}")
    if exported_given and args.decoder_layers is not None:
        raise DFineError(f"{args.model}: --decoder-layers does not apply to an exported file: its decoder depth was "
                         "chosen at export (dfine export --decoder-layers)")
    if exported_given and args.half:
        # it would be ignored, and the numbers read as fp16 ones; as dfine predict says for an exported file
        raise DFineError(f"{args.model}: --half does not apply to an exported file: its precision was chosen at "
                         "export (dfine export --half)")
    if runtime is not None and not exported_given:
        runtime.require_export()  # the model is exported first
    if args.threads:
        torch.set_num_threads(args.threads)
    # before any export: the runtime is there and can run on --device (ONNX Runtime would otherwise run wherever it
    # can, whatever --device says)
    prepared = runtime.prepare(args.device) if runtime is not None else None

    model = None
    params = gflops = None
    # for an exported file both are replaced by what its graph was exported for (see _graph_input)
    size = (args.image_size, args.image_size) if args.image_size is not None else (640, 640)
    batch = args.batch_size or 1
    if not exported_given:
        from dfine.config.image_size import check_image_size
        from dfine.model.auto import checkpoint_model_class
        from dfine.processing.input_size import model_input_size

        # a segmentation checkpoint is timed with its mask branch, as predict runs it (not as a detector)
        model_class = checkpoint_model_class(args.model)
        if model_class.has_mask_head and runtime is not None and not runtime.masks:
            raise DFineError(f"{args.model} is a segmentation model: its masks export to ONNX and OpenVINO only for "
                             "now (--backend torch, onnxruntime or openvino)")
        model = model_class.from_pretrained(args.model)
        if args.decoder_layers is not None:
            model.set_decoder_layers(args.decoder_layers)
        if args.image_size is None:
            size = model_input_size(args.model)
        # before count_flops, whose top-k fails on too few positions
        check_image_size(model.config, size, training=False)
        params = count_parameters(model)
        gflops = count_flops(model.deploy(size), size)

    device = resolve_device(args.device if runtime is None else "cpu")
    where = str(device)
    with tempfile.TemporaryDirectory() as tmp:
        if runtime is None:
            call, description = _torch_runner(args, model, device, size, batch)
        else:
            path = given if exported_given else _exported_file(args, runtime, model, Path(tmp), size, batch)
            # the precision of a file exported here is --half's (OpenVINO's: --precision's); the runtime reads a
            # given file's where it can
            precision = args.precision or (None if exported_given else "fp16" if args.half else "fp32")
            opened = runtime.open(path, prepared, args.threads, precision)
            runner: Any = opened.model.run
            graph = opened.model.batch, opened.model.image_size
            description, where = opened.description, opened.where  # ONNX Runtime on CUDA is timed from the host
            if opened.torch_device is not None:
                device = torch.device(opened.torch_device)
            if exported_given:
                batch, size = _graph_input(args, path, *graph)
            images = np.random.rand(batch, 3, *size).astype(np.float32)
            sizes = np.array([[size[1], size[0]]] * batch, dtype=np.int64)  # (width, height) per image

            def call() -> Any:
                return runner(images, sizes)

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        timing = time_callable(call, iters=args.iters, warmup=args.warmup, device=device, batch=batch)
        memory = peak_memory_mib(device)

    where += f" ({torch.get_num_threads()} threads)" if where == "cpu" else ""
    print(f"model:       {args.model}")
    print(f"backend:     {args.backend}: {description}")
    print(f"device:      {where}, input {batch}x3x{size[0]}x{size[1]}")
    if params is not None:
        print(f"parameters:  {params / 1e6:.2f} M")
    if gflops is not None:
        print(f"GFLOPs:      {gflops:.1f} per image (2 FLOPs per multiply-accumulate, as in the paper)")
    print(f"latency:     median {timing.median_ms:.2f} ms, p90 {timing.p90_ms:.2f} ms per batch "
          f"({len(timing.times_ms)} runs after {args.warmup} warm-up)")
    print(f"throughput:  {timing.images_per_s:.1f} images/s")
    if memory is not None:
        print(f"peak memory: {memory:.0f} MiB")
    hint = speed_hint(args, device.type)
    if hint is not None:
        print(hint)
    return 0
