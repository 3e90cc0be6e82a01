"""Latency of dfine against Hugging Face transformers on the same weights, every size, side by side.

    python benchmarks/latency.py --output docs/benchmarks.md            # CPU (2 threads) and, if present, GPU
    python benchmarks/latency.py --sizes n,l --iters 10 --no-gpu

For each size our model gets random weights (timing does not depend on them), is written with ``save_pretrained``
and loaded by ``transformers.DFineForObjectDetection.from_pretrained`` (config via ``transformers.DFineConfig``),
so both sides run the same network. Measured, batch 1 at 640×640:

* CPU (``--threads``, default 2): ours eager (training form, numerically identical to transformers), ours deploy
  (``optimize_for_inference``: folded BN, merged RepVGG, channels-last), ours ONNX Runtime (CPU EP, full graph
  optimisation, intra-op threads = ``--threads``), transformers eager; with ``--bf16`` the deploy form in bfloat16;
  with ``--openvino`` the same ONNX graph converted to an OpenVINO IR, run in f32, in bf16 (CPUs with AVX-512 BF16
  or AMX) and INT8 (NNCF, float parts in the fastest float precision); with ``--int8`` ONNX Runtime INT8 (static
  QDQ). The INT8 models are calibrated on structured test pictures (:func:`dfine.export.verify.check_images`): the
  weights are random, so only their speed means something here (``dfine export --int8`` measures the accuracy on a
  data set). Runs are interleaved round by round, so a busy machine slows every contender alike; the table shows
  medians.
* GPU (when CUDA is available): fp32 / fp16 / bf16 latency of ours eager, ours optimised, ours CUDA graph, ours
  compiled (``--compile``), ONNX Runtime CUDA EP (if installed), TensorRT (if installed) and transformers; then
  batch-32 fp16 throughput and peak memory, ours vs transformers.

Results go to a markdown table (``--output``) and JSON (``--json``, default beside the markdown).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

SIZES = ["n", "s", "m", "l", "x"]

#: the CPU table's columns, in order: (result key, header); a column shows when some size has it
CPU_COLUMNS = [
    ("ours eager", "ours eager fp32"), ("ours deploy", "ours deploy fp32"),
    ("ours onnxruntime", "ours ONNX Runtime fp32"), ("transformers", "transformers fp32"),
    ("ours deploy bf16", "ours deploy bf16"), ("ours onnxruntime int8", "ours ONNX Runtime INT8"),
    ("ours openvino f32", "ours OpenVINO f32"), ("ours openvino bf16", "ours OpenVINO bf16"),
    ("ours openvino f16", "ours OpenVINO f16"), ("ours openvino int8", "ours OpenVINO INT8"),
]


def cpu_features() -> str:
    """The CPU's features the reduced precisions depend on (from /proc/cpuinfo and OpenVINO), for the table."""
    try:
        flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        flags = set()
    named = [name for flag, name in (("avx512_vnni", "AVX-512 VNNI"), ("avx512_bf16", "AVX-512 BF16"),
                                     ("amx_bf16", "AMX-BF16"), ("amx_int8", "AMX-INT8"), ("amx_fp16", "AMX-FP16"),
                                     ("avx512_fp16", "AVX512-FP16")) if flag in flags]
    try:
        from dfine.runtime.openvino import core

        named.append("OpenVINO: " + "/".join(core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")))
    except Exception as error:  # noqa: BLE001 -- OpenVINO missing or unable to start: the flags say enough
        named.append(f"OpenVINO: not available ({type(error).__name__})")
    return ", ".join(named) or "none of AVX-512 VNNI, AVX-512 BF16 or AMX"


def interleaved(runners: dict[str, Callable[[], Any]], rounds: int, warmup: int, sync: Callable[[], None] | None
                = None) -> dict[str, list[float]]:
    """Milliseconds per call of every runner, timed round-robin (one call each per round)."""
    for fn in runners.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            if sync:
                sync()
            start = time.perf_counter()
            fn()
            if sync:
                sync()
            times[name].append((time.perf_counter() - start) * 1000)
    return times


def interleaved_medians(runners: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1) -> dict[str, float]:
    """Median milliseconds per call of every runner, timed round-robin (:func:`interleaved`)."""
    return {name: statistics.median(values) for name, values in interleaved(runners, rounds, warmup).items()}


def build_pair(size: str, workdir: Path) -> tuple[torch.nn.Module, torch.nn.Module | None, Path]:
    """Our model (random weights), transformers' model loaded from our files (None if transformers is missing)."""
    from dfine import DFineConfig, DFineForObjectDetection

    torch.manual_seed(0)
    ours = DFineForObjectDetection(DFineConfig.from_preset(f"dfine-{size}-coco")).eval()
    directory = workdir / f"dfine-{size}"
    ours.save_pretrained(directory)
    try:
        import transformers
    except ImportError:
        return ours, None, directory
    hf_config = transformers.DFineConfig.from_pretrained(directory)
    theirs = transformers.DFineForObjectDetection.from_pretrained(directory, config=hf_config).eval()
    return ours, theirs, directory


def _calibration(image_size: int, count: int = 16) -> Any:
    """Structured test pictures as INT8 calibration inputs (random weights: only the speed of the result counts)."""
    from dfine.export.calibration import CalibrationSet
    from dfine.export.verify import check_images
    from dfine.runtime.detector import preprocess

    pictures = check_images([(image_size + 13 * i, image_size - 7 * i) for i in range(count)], seed=5)
    batches = [(preprocess([p], (image_size, image_size)), np.array([[p.width, p.height]], dtype=np.int64))
               for p in pictures]
    return CalibrationSet(batches, "synthetic", Path("check_images"), [], [])


def quantized_runners(size: str, onnx_path: Path, workdir: Path, args: argparse.Namespace
                      ) -> dict[str, Callable[[np.ndarray, np.ndarray], Any]]:
    """OpenVINO f32 / bf16 / INT8 and ONNX Runtime INT8 runners of the exported graph, as asked."""
    from dfine.runtime.onnx import OnnxDetector

    runners: dict[str, Callable[[np.ndarray, np.ndarray], Any]] = {}
    calibration = _calibration(args.image_size) if (args.int8 or args.openvino) else None
    if args.int8:
        from dfine.export.int8 import quantize_onnx

        int8_path = workdir / f"{size}-int8.onnx"
        quantize_onnx(onnx_path, int8_path, calibration)
        runners["ours onnxruntime int8"] = OnnxDetector(int8_path, ["CPUExecutionProvider"], args.threads).run
    if args.openvino:
        from dfine.export.int8 import quantize_openvino
        from dfine.export.openvino import convert_onnx, save_ir
        from dfine.runtime.openvino import OpenVinoDetector, supported_precisions

        ir = workdir / f"{size}.xml"
        save_ir(convert_onnx(onnx_path, {}), ir)
        supported = supported_precisions()
        for precision in supported:
            runners[f"ours openvino {precision}"] = OpenVinoDetector(ir, threads=args.threads,
                                                                     precision=precision).run
        int8_ir = workdir / f"{size}-int8.xml"
        save_ir(quantize_openvino(convert_onnx(onnx_path, {}), calibration), int8_ir)
        # the float parts in the reduced precision when the CPU has one, as dfine export chooses it when verified
        runners["ours openvino int8"] = OpenVinoDetector(int8_ir, threads=args.threads, precision=supported[-1]).run
    return runners


def cpu_rows(size: str, ours: torch.nn.Module, theirs: torch.nn.Module | None, workdir: Path, args: argparse.Namespace
             ) -> dict[str, float]:
    from dfine.export.onnx import export_onnx
    from dfine.runtime.onnx import OnnxDetector

    torch.set_num_threads(args.threads)
    pixels = torch.rand(1, 3, args.image_size, args.image_size)
    fast = ours.optimize_for_inference(image_size=args.image_size)
    onnx_path = export_onnx(ours, workdir / f"{size}.onnx", args.image_size, check=False).path
    detector = OnnxDetector(onnx_path, providers=["CPUExecutionProvider"], threads=args.threads)
    images = pixels.numpy()
    sizes = np.array([[args.image_size, args.image_size]], dtype=np.int64)

    def torch_call(module: torch.nn.Module) -> Callable[[], Any]:
        def call() -> Any:
            with torch.inference_mode():
                return module(pixels)
        return call

    runners = {"ours eager": torch_call(ours), "ours deploy": torch_call(fast),
               "ours onnxruntime": lambda: detector.run(images, sizes)}
    if args.bf16:
        runners["ours deploy bf16"] = torch_call(ours.optimize_for_inference(dtype=torch.bfloat16,
                                                                             image_size=args.image_size))
    for name, run in quantized_runners(size, onnx_path, workdir, args).items():
        runners[name] = lambda run=run: run(images, sizes)
    if theirs is not None:
        runners["transformers"] = torch_call(theirs)
    wait_for_idle(args.wait_idle)
    load_before = _load()
    times = interleaved(runners, args.iters, args.warmup)
    row = {name: statistics.median(values) for name, values in times.items()}
    row.update({f"{name} (min)": min(values) for name, values in times.items()})
    row["load average (before, after)"] = [load_before, _load()]
    return row


def _load() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def wait_for_idle(max_seconds: float, threshold: float = 0.5) -> None:
    """Wait (up to ``max_seconds``) until the 1-minute load average falls below ``threshold``: other processes on
    a small machine distort CPU timings far more than they distort ratios."""
    deadline = time.time() + max_seconds
    while max_seconds > 0 and time.time() < deadline and _load() > threshold:
        time.sleep(5)


def gpu_rows(size: str, ours: torch.nn.Module, theirs: torch.nn.Module | None, args: argparse.Namespace
             ) -> dict[str, float]:
    """Batch-1 latency on CUDA per dtype and mode (CUDA-event timing through synchronisation)."""
    import copy

    device = torch.device("cuda")
    pixels = torch.rand(1, 3, args.image_size, args.image_size, device=device)
    sync = torch.cuda.synchronize
    results: dict[str, float] = {}
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        name = str(dtype).replace("torch.", "")
        runners: dict[str, Callable[[], Any]] = {}
        eager = copy.deepcopy(ours).to(device, dtype)
        typed = pixels.to(dtype)
        runners[f"ours eager {name}"] = lambda m=eager, x=typed: m(x)
        fast = ours.optimize_for_inference(dtype=dtype, device=device, image_size=args.image_size)
        runners[f"ours optimised {name}"] = lambda m=fast: m(pixels)
        graph = ours.optimize_for_inference(dtype=dtype, device=device, image_size=args.image_size, cuda_graph=True)
        runners[f"ours cuda-graph {name}"] = lambda m=graph: m(pixels)
        if args.compile:
            compiled = ours.optimize_for_inference(dtype=dtype, device=device, image_size=args.image_size,
                                                   compile=True, cuda_graph=True)
            runners[f"ours compiled+graph {name}"] = lambda m=compiled: m(pixels)
        if theirs is not None:
            hf = copy.deepcopy(theirs).to(device, dtype)
            runners[f"transformers {name}"] = lambda m=hf, x=typed: m(pixel_values=x)
        with torch.inference_mode():
            times = interleaved(runners, args.iters, args.warmup, sync)
        results.update({k: statistics.median(v) for k, v in times.items()})
        del eager, fast, graph
        torch.cuda.empty_cache()
    return results


def gpu_throughput(size: str, ours: torch.nn.Module, theirs: torch.nn.Module | None, args: argparse.Namespace
                   ) -> dict[str, float]:
    """Batch-32 fp16 images/s and peak memory (MiB), ours optimised vs transformers."""
    import copy

    device = torch.device("cuda")
    batch = 32
    pixels = torch.rand(batch, 3, args.image_size, args.image_size, device=device)
    out: dict[str, float] = {}
    contenders: dict[str, Callable[[], Any]] = {}
    fast = ours.optimize_for_inference(dtype=torch.float16, device=device, image_size=args.image_size,
                                       batch_size=batch)
    contenders["ours"] = lambda: fast(pixels)
    if theirs is not None:
        hf = copy.deepcopy(theirs).to(device, torch.float16)
        half = pixels.half()
        contenders["transformers"] = lambda: hf(pixel_values=half)
    for name, fn in contenders.items():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        with torch.inference_mode():
            times = interleaved({name: fn}, max(3, args.iters // 2), 2, torch.cuda.synchronize)[name]
        out[f"{name} images/s"] = batch * 1000 / statistics.median(times)
        out[f"{name} peak MiB"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def _cpu_cell(row: dict[str, Any], key: str) -> str:
    """``12.3 (4.56×)``: milliseconds and the speed-up over transformers of the same row."""
    if key not in row:
        return ""
    hf = row.get("transformers")
    return f"{row[key]:.1f}" + (f" ({hf / row[key]:.2f}×)" if hf and key != "transformers" else "")


def cpu_name() -> str:
    """The CPU's model name (``platform.processor()`` is only the architecture on Linux)."""
    try:
        line = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
        return line.split(":", 1)[1].strip()
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def markdown(results: dict[str, Any], args: argparse.Namespace) -> str:
    versions = ", ".join(f"{name} {results.get(name, 'n/a')}" for name in ("transformers", "onnxruntime", "openvino"))
    intro = (f"Generated by `benchmarks/latency.py` on {results['machine']}; torch {results['torch']}, {versions}. "
             "Random weights (speed does not depend on them), the same weights on both sides. Batch 1, "
             f"{args.image_size}×{args.image_size}, median of interleaved runs.")
    lines = ["# Benchmarks", "", intro, ""]
    if results.get("cpu"):
        present = {key for row in results["cpu"].values() for key in row}
        columns = [(key, header) for key, header in CPU_COLUMNS if key in present]
        lines += [f"## CPU, {args.threads} threads (ms per image, speed-up over transformers in brackets)", "",
                  "| size | " + " | ".join(header for _, header in columns) + " |",
                  "|---|" + "---|" * len(columns)]
        for size, row in results["cpu"].items():
            lines.append(f"| {size.upper()} | " + " | ".join(_cpu_cell(row, key) for key, _ in columns) + " |")
        note = ("fp32 columns compute the same function (deploy, ONNX Runtime and OpenVINO f32 to float rounding); "
                "bf16 runs the backbone and encoder in bfloat16 (PyTorch: head in fp32; OpenVINO: the plugin's "
                "choice of layers), so its detections differ slightly. INT8 quantizes the backbone, encoder and "
                f"decoder projections (dfine.export.int8). CPU features: {results.get('cpu_features', 'n/a')}.")
        lines += ["", note, ""]
    if results.get("gpu"):
        lines += [f"## GPU ({results.get('gpu_name', 'CUDA')}), batch 1 (ms)", ""]
        modes = sorted({k for row in results["gpu"].values() for k in row})
        lines += ["| size | " + " | ".join(modes) + " |", "|---|" + "---|" * len(modes)]
        for size, row in results["gpu"].items():
            lines.append(f"| {size.upper()} | " + " | ".join(f"{row.get(m, float('nan')):.2f}" for m in modes) + " |")
        lines.append("")
    if results.get("gpu_batch32"):
        header = "| size | ours images/s | transformers images/s | ratio | ours peak MiB | transformers peak MiB |"
        lines += ["## GPU, batch 32, fp16", "", header, "|---|---|---|---|---|---|"]
        for size, row in results["gpu_batch32"].items():
            ours_ips, hf_ips = row.get("ours images/s", float("nan")), row.get("transformers images/s", float("nan"))
            lines.append(f"| {size.upper()} | {ours_ips:.0f} | {hf_ips:.0f} | {ours_ips / hf_ips:.2f}× | "
                         f"{row.get('ours peak MiB', float('nan')):.0f} | "
                         f"{row.get('transformers peak MiB', float('nan')):.0f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=10, help="timed rounds (default 10)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-cpu", action="store_true")
    parser.add_argument("--no-gpu", action="store_true")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile on GPU (slow to build)")
    parser.add_argument("--bf16", action="store_true", help="also time the deploy form in bfloat16 on the CPU")
    parser.add_argument("--openvino", action="store_true",
                        help="also time OpenVINO f32, bf16 (where the CPU has it) and INT8 on the CPU")
    parser.add_argument("--int8", action="store_true", help="also time ONNX Runtime INT8 on the CPU")
    parser.add_argument("--wait-idle", type=float, default=0.0,
                        help="before each CPU size, wait up to this many seconds for the machine to be idle")
    parser.add_argument("--output", default=None, help="markdown file (e.g. docs/benchmarks.md)")
    parser.add_argument("--json", default=None, help="JSON file (default: beside --output)")
    args = parser.parse_args(argv)

    results: dict[str, Any] = {"machine": cpu_name(), "torch": torch.__version__,
                               "cpu": {}, "gpu": {}, "gpu_batch32": {}}
    results["cpu_features"] = cpu_features()
    for module in ("transformers", "onnxruntime", "openvino", "nncf"):
        try:
            results[module] = __import__(module).__version__
        except ImportError:
            pass
    cuda = torch.cuda.is_available() and not args.no_gpu
    if cuda:
        results["gpu_name"] = torch.cuda.get_device_name()
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            ours, theirs, _ = build_pair(size, Path(tmp))
            if not args.no_cpu:
                results["cpu"][size] = cpu_rows(size, ours, theirs, Path(tmp), args)
                print(size, "cpu", results["cpu"][size], flush=True)
            if cuda:
                results["gpu"][size] = gpu_rows(size, ours, theirs, args)
                results["gpu_batch32"][size] = gpu_throughput(size, ours, theirs, args)
                print(size, "gpu", results["gpu"][size], results["gpu_batch32"][size], flush=True)
    text = markdown(results, args)
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")
        json_path = Path(args.json) if args.json else Path(args.output).with_suffix(".json")
        json_path.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
