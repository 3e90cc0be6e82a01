"""Latency of dfine against Hugging Face transformers on the same weights, every size, side by side.

    python benchmarks/latency.py --output docs/benchmarks.md            # CPU (2 threads) and, if present, GPU
    python benchmarks/latency.py --sizes n,l --iters 10 --no-gpu

For each size our model gets random weights (timing does not depend on them), is written with ``save_pretrained``
and loaded by ``transformers.DFineForObjectDetection.from_pretrained`` (config via ``transformers.DFineConfig``),
so both sides run the same network. Measured, batch 1 at 640×640:

* CPU (``--threads``, default 2): ours eager (training form, numerically identical to transformers), ours deploy
  (``optimize_for_inference``: folded BN, merged RepVGG, channels-last), ours ONNX Runtime (CPU EP, full graph
  optimisation, intra-op threads = ``--threads``), transformers eager. Runs are interleaved round by round, so a
  busy machine slows every contender alike; the table shows medians.
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


def markdown(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines = ["# Benchmarks", "", f"Generated by `benchmarks/latency.py` on {results['machine']}; torch "
             f"{results['torch']}, transformers {results.get('transformers', 'n/a')}, onnxruntime "
             f"{results.get('onnxruntime', 'n/a')}. Random weights (speed does not depend on them), the same weights "
             "on both sides. Batch 1, 640×640, median of interleaved runs.", ""]
    if results.get("cpu"):
        bf16 = any("ours deploy bf16" in row for row in results["cpu"].values())
        lines += [f"## CPU, {args.threads} threads (ms per image, speed-up over transformers in brackets)", "",
                  "| size | ours eager fp32 | ours deploy fp32 | ours ONNX Runtime fp32 | transformers fp32 |"
                  + (" ours deploy bf16 |" if bf16 else ""),
                  "|---|---|---|---|---|" + ("---|" if bf16 else "")]
        for size, row in results["cpu"].items():
            hf = row.get("transformers")

            def cell(key: str) -> str:
                if key not in row:
                    return ""
                return f"{row[key]:.1f}" + (f" ({hf / row[key]:.2f}×)" if hf and key != "transformers" else "")

            lines.append(f"| {size.upper()} | {cell('ours eager')} | {cell('ours deploy')} | "
                         f"{cell('ours onnxruntime')} | {cell('transformers')} |"
                         + (f" {cell('ours deploy bf16')} |" if bf16 else ""))
        lines += ["", "fp32 rows compute the same function (deploy and ONNX Runtime to float rounding); bf16 runs the "
                  "backbone and encoder in bfloat16 (AMX on recent Xeons) with the head in fp32, so its detections "
                  "differ slightly.", ""]
    if results.get("gpu"):
        lines += [f"## GPU ({results.get('gpu_name', 'CUDA')}), batch 1 (ms)", ""]
        modes = sorted({k for row in results["gpu"].values() for k in row})
        lines += ["| size | " + " | ".join(modes) + " |", "|---|" + "---|" * len(modes)]
        for size, row in results["gpu"].items():
            lines.append(f"| {size.upper()} | " + " | ".join(f"{row.get(m, float('nan')):.2f}" for m in modes) + " |")
        lines.append("")
    if results.get("gpu_batch32"):
        lines += ["## GPU, batch 32, fp16", "", "| size | ours images/s | transformers images/s | ratio | ours peak MiB"
                  " | transformers peak MiB |", "|---|---|---|---|---|---|"]
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
    parser.add_argument("--wait-idle", type=float, default=0.0,
                        help="before each CPU size, wait up to this many seconds for the machine to be idle")
    parser.add_argument("--output", default=None, help="markdown file (e.g. docs/benchmarks.md)")
    parser.add_argument("--json", default=None, help="JSON file (default: beside --output)")
    args = parser.parse_args(argv)

    results: dict[str, Any] = {"machine": f"{platform.processor() or platform.machine()}", "torch": torch.__version__,
                               "cpu": {}, "gpu": {}, "gpu_batch32": {}}
    for module in ("transformers", "onnxruntime"):
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
