"""One prepared GPU check: correctness of the fast path on CUDA, and the timings for the closing note.

    PYTHONPATH=src python benchmarks/gpu_check.py            # on the GPU machine; results under $OUT
    PYTHONPATH=src python benchmarks/gpu_check.py --dry-run  # anywhere (CPU): tiny sizes, a few iterations

Random weights only (nothing is downloaded), transformers on the same weights (our ``save_pretrained`` ->
``transformers.DFineForObjectDetection.from_pretrained``). Work is ordered by importance and every item is wrapped
so that one failure does not lose the rest; past ``--deadline`` seconds (default 400) remaining items are skipped.
Results are rewritten after every item to ``$OUT/gpu_check.json`` and ``$OUT/gpu_check.md`` (``$OUT`` falls back to
``./gpu_results``), and a compact table is printed at the end.

Items, in order:
1. batch-1 fp16 latency of L and N: ours optimised (deploy form, fp16 body / fp32 head, channels-last), ours
   CUDA graph, transformers fp16;
2. correctness: deploy vs training form (fp32, TF32 off), fp16 and bf16 vs fp32 on well-conditioned random weights
   (top-100 boxes within 1 px at 640, same labels; plus the model's own noise floor), CUDA-graph replay equal to
   eager, no host synchronisation in the forward (``torch.cuda.set_sync_debug_mode("error")``);
3. batch-32 fp16 throughput and peak memory, every size, ours vs transformers;
4. torch.compile of N: agreement with eager, compile time, latency alone and inside a CUDA graph;
5. batch-1 latency matrix: every size × fp16/fp32/bf16 × ours eager / optimised / CUDA graph, transformers;
6. torch.compile of L;
7. ONNX Runtime CUDA execution provider, if installed (N and L, fp32).

``--focus goals`` runs only what the open speed goals need (see :func:`goals`).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

START = time.perf_counter()


class Check:
    """Collects results, enforces the deadline, writes files after every item."""

    def __init__(self, out: Path, deadline: float) -> None:
        self.out = out
        self.deadline = deadline
        self.results: dict[str, Any] = {"env": {}, "items": {}, "latency_ms": {}, "batch32": {}, "checks": {},
                                        "errors": {}, "skipped": []}
        out.mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float:
        return time.perf_counter() - START

    def run(self, name: str, fn: Callable[[], Any], needs: float = 10.0) -> Any:
        """Run one item unless fewer than ``needs`` seconds remain before the deadline."""
        if self.elapsed() + needs > self.deadline:
            self.results["skipped"].append(name)
            print(f"[{self.elapsed():6.1f}s] skip {name} (deadline)", flush=True)
            return None
        started = time.perf_counter()
        print(f"[{self.elapsed():6.1f}s] {name} ...", flush=True)
        try:
            value = fn()
            self.results["items"][name] = round(time.perf_counter() - started, 1)
            return value
        except Exception as error:  # keep going: one failure must not lose the rest
            self.results["errors"][name] = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}" \
                if str(error).strip() else type(error).__name__
            print(f"    FAILED {name}: {self.results['errors'][name]}", flush=True)
            traceback.print_exc(limit=3)
            return None
        finally:
            self.save()

    def save(self) -> None:
        (self.out / "gpu_check.json").write_text(json.dumps(self.results, indent=1, default=str) + "\n")
        (self.out / "gpu_check.md").write_text(render(self.results) + "\n")


# ------------------------------------------------------------------------------------------------------ helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, iters: int, warmup: int) -> dict[str, float]:
    from dfine.export.benchmark import time_callable

    with torch.inference_mode():
        timing = time_callable(fn, iters=iters, warmup=warmup, device=device, max_seconds=5.0)
    return {"median": round(timing.median_ms, 3), "p90": round(timing.p90_ms, 3), "min": round(timing.min_ms, 3)}


def build_pair(size: str, workdir: Path) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """Our model (random weights, seeded) and transformers' model on the same weights (None if unavailable)."""
    from dfine import DFineConfig, DFineForObjectDetection

    torch.manual_seed(0)
    ours = DFineForObjectDetection(DFineConfig.from_preset(f"dfine-{size}-coco")).eval()
    try:
        import transformers
    except ImportError:
        return ours, None
    directory = workdir / f"dfine-{size}"
    ours.save_pretrained(directory)
    config = transformers.DFineConfig.from_pretrained(directory)
    theirs = transformers.DFineForObjectDetection.from_pretrained(directory, config=config).eval()
    return ours, theirs


def agreement(reference: Any, output: Any, box_tol: float, score_tol: float = float("inf")) -> float:
    from dfine.export.verify import match_detections, top_detections

    ref = top_detections(reference.logits.float().cpu().numpy(), reference.pred_boxes.float().cpu().numpy(), k=None)
    got = top_detections(output.logits.float().cpu().numpy(), output.pred_boxes.float().cpu().numpy(), k=None)
    return round(match_detections(ref, got, top=100, score_tol=score_tol, box_tol=box_tol).fraction, 4)


def free(*objects: Any) -> None:
    del objects
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -------------------------------------------------------------------------------------------------------- items
def latency_matrix(check: Check, size: str, pair: tuple, device: torch.device, dtypes: list[torch.dtype],
                   modes: list[str], cfg: argparse.Namespace) -> None:
    """Batch-1 latency of the given modes and dtypes for one size; results under latency_ms[size][dtype][mode]."""
    ours, theirs = pair
    pixels = torch.rand(1, 3, cfg.image_size, cfg.image_size, device=device)
    table = check.results["latency_ms"].setdefault(size, {})
    for dtype in dtypes:
        name = str(dtype).replace("torch.", "")
        row = table.setdefault(name, {})
        for mode in modes:
            if mode in row:
                continue

            def measure(mode: str = mode) -> None:
                if mode == "transformers":
                    if theirs is None:
                        return
                    model = copy.deepcopy(theirs).to(device, dtype)
                    x = pixels.to(dtype)
                    row[mode] = timed(lambda: model(pixel_values=x), device, cfg.iters, cfg.warmup)
                elif mode == "ours eager":
                    model = copy.deepcopy(ours).to(device, dtype)
                    x = pixels.to(dtype)
                    row[mode] = timed(lambda: model(x), device, cfg.iters, cfg.warmup)
                else:
                    model = ours.optimize_for_inference(dtype=dtype, device=device, image_size=cfg.image_size,
                                                        cuda_graph=mode == "ours cuda-graph",
                                                        compile=mode == "ours compiled+graph")
                    row[mode] = timed(lambda: model(pixels), device, cfg.iters, cfg.warmup)
                free(model)

            check.run(f"latency {size} {name} {mode}", measure, needs=8 if "compiled" not in mode else 120)


def correctness(check: Check, size: str, device: torch.device, cfg: argparse.Namespace) -> None:
    from dfine.export.synthetic import calibration_pixels, synthetic_detector

    results = check.results["checks"].setdefault(size, {})
    model = synthetic_detector(f"dfine-{size}-coco", cfg.image_size, seed=0, device=device)
    pixels = calibration_pixels(cfg.image_size, count=2, seed=7).to(device)
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # exact fp32 comparisons
    try:
        with torch.inference_mode():
            reference = model(pixels)
            floor = model(pixels.half().float())  # the weights' own sensitivity to fp16-sized input rounding

        def deploy_vs_eager() -> None:
            fast = model.optimize_for_inference(image_size=cfg.image_size)
            with torch.inference_mode():
                out = fast(pixels)
            results["deploy fp32 vs training form (1e-4)"] = agreement(reference, out, 1e-4, 1e-4)

        check.run(f"check {size} deploy vs eager", deploy_vs_eager)
        results["noise floor: fp32 on fp16-rounded input (1 px)"] = agreement(reference, floor, 1 / 640)
        for dtype in cfg.half_dtypes:
            name = str(dtype).replace("torch.", "")

            def precision(dtype: torch.dtype = dtype, name: str = name) -> None:
                fast = model.optimize_for_inference(dtype=dtype, image_size=cfg.image_size)
                with torch.inference_mode():
                    out = fast(pixels)
                results[f"{name} vs fp32: boxes within 1 px at 640 and same label"] = agreement(reference, out, 1 / 640)
                results[f"{name} vs fp32: within 2 px"] = agreement(reference, out, 2 / 640)
                with torch.inference_mode():
                    naive = copy.deepcopy(model).to(dtype)(pixels.to(dtype))
                results[f"{name} everywhere (training form .to({name})) within 1 px"] = agreement(reference, naive,
                                                                                                  1 / 640)

            check.run(f"check {size} {name} agreement", precision)

        if device.type == "cuda":
            def graph_replay() -> None:
                eager = model.optimize_for_inference(dtype=torch.float16, image_size=cfg.image_size)
                graphed = model.optimize_for_inference(dtype=torch.float16, image_size=cfg.image_size,
                                                       cuda_graph=True, batch_size=2)
                diffs = []
                for seed in (1, 2):
                    x = calibration_pixels(cfg.image_size, count=2, seed=seed).to(device)
                    with torch.inference_mode():
                        a, b = eager(x), graphed(x)
                    diffs.append(float((a.pred_boxes - b.pred_boxes).abs().max()))
                    diffs.append(float((a.logits - b.logits).abs().max()))
                results["cuda graph replay vs eager: max abs diff"] = max(diffs)

            def no_sync() -> None:
                fast = model.optimize_for_inference(dtype=torch.float16, image_size=cfg.image_size)
                with torch.inference_mode():
                    fast(pixels)
                    torch.cuda.synchronize()
                    torch.cuda.set_sync_debug_mode("error")
                    try:
                        fast(pixels)
                    finally:
                        torch.cuda.set_sync_debug_mode("default")
                results["forward without host sync (sync_debug_mode=error)"] = True

            check.run(f"check {size} cuda graph replay", graph_replay)
            check.run(f"check {size} no host sync", no_sync)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        free(model)


def batch32(check: Check, size: str, pair: tuple, device: torch.device, cfg: argparse.Namespace,
            modes: tuple[str, ...] | None = None) -> None:
    ours, theirs = pair
    row = check.results["batch32"].setdefault(size, {})
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    batch = cfg.big_batch
    pixels = torch.rand(batch, 3, cfg.image_size, cfg.image_size, device=device)

    def run(mode: str) -> None:
        free()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        if mode == "transformers":
            if theirs is None:
                return
            model = copy.deepcopy(theirs).to(device, dtype)
            x = pixels.to(dtype)
            fn = lambda: model(pixel_values=x)  # noqa: E731
        else:
            # "tf32 head": the float32 head with TF32 matrix products (a process-wide flag, restored below)
            torch.backends.cuda.matmul.allow_tf32 = "tf32" in mode
            model = ours.optimize_for_inference(dtype=dtype, device=device, image_size=cfg.image_size,
                                                batch_size=batch, cuda_graph=mode != "ours optimised",
                                                compile="compiled" in mode,
                                                head_dtype=None if "half head" in mode else torch.float32)
            fn = lambda: model(pixels)  # noqa: E731
        try:
            result = timed(fn, device, max(3, cfg.iters // 2), 2)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = False
        result["images_per_s"] = round(batch * 1000 / result["median"], 1)
        if device.type == "cuda":
            result["peak_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
        row[mode] = result
        free(model)

    if modes is None:
        modes = ("ours optimised", "transformers", "ours cuda-graph") if device.type == "cuda" else (
            "ours optimised", "transformers")
    for mode in modes:
        check.run(f"batch{batch} {size} {mode}", lambda mode=mode: run(mode),
                  needs=10 if "compiled" not in mode else 120)


def kernel_profile(check: Check, size: str, pair: tuple, device: torch.device, cfg: argparse.Namespace) -> None:
    """The 25 most expensive kernels (or CPU ops) of one large-batch fp16 forward: where the time goes."""
    ours, _ = pair
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    pixels = torch.rand(cfg.big_batch, 3, cfg.image_size, cfg.image_size, device=device)

    def run() -> None:
        from torch.profiler import ProfilerActivity, profile

        model = ours.optimize_for_inference(dtype=dtype, device=device, image_size=cfg.image_size)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with torch.inference_mode():
            for _ in range(3):
                model(pixels)
            sync(device)
            with profile(activities=activities) as prof:
                model(pixels)
                sync(device)
        key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
        events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
        total = sum(getattr(e, key) for e in events) or 1.0
        check.results.setdefault("profile", {})[f"{size} batch{cfg.big_batch}"] = [
            {"name": e.key[:120], "calls": e.count, "ms": round(getattr(e, key) / 1000, 3),
             "share": round(getattr(e, key) / total, 4)} for e in events[:25]]
        free(model)

    check.run(f"profile {size} batch{cfg.big_batch}", run, needs=20)


def compiled(check: Check, size: str, pair: tuple, device: torch.device, cfg: argparse.Namespace,
             compile_mode: str | None = None, half_head: bool = False) -> None:
    ours, _ = pair
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    head_dtype = None if half_head else torch.float32
    suffix = (f" {compile_mode}" if compile_mode else "") + (" half head" if half_head else "")
    row = check.results["checks"].setdefault(size + suffix, {})

    def run() -> None:
        pixels = torch.rand(1, 3, cfg.image_size, cfg.image_size, device=device)
        eager = ours.optimize_for_inference(dtype=dtype, device=device, image_size=cfg.image_size)
        started = time.perf_counter()
        fast = ours.optimize_for_inference(dtype=dtype, device=device, image_size=cfg.image_size, compile=True,
                                           compile_mode=compile_mode, head_dtype=head_dtype)
        row["torch.compile seconds"] = round(time.perf_counter() - started, 1)
        with torch.inference_mode():
            a, b = eager(pixels), fast(pixels)
        row["compiled vs eager: top-100 within 1 px, same label"] = agreement(a, b, 1 / 640)
        row["compiled vs eager: max abs diff in boxes"] = float((a.pred_boxes - b.pred_boxes).abs().max())
        name = str(dtype).replace("torch.", "") + suffix
        table = check.results["latency_ms"].setdefault(size, {}).setdefault(name, {})
        table["ours compiled"] = timed(lambda: fast(pixels), device, cfg.iters, cfg.warmup)
        if device.type == "cuda":
            from dfine.model.deploy.fast import CUDAGraphRunner

            graph = CUDAGraphRunner(fast, pixels)
            table["ours compiled+graph"] = timed(lambda: graph(pixels), device, cfg.iters, cfg.warmup)
        free(eager, fast)

    check.run(f"compile {size}{suffix}", run,
              needs=150 if not cfg.dry_run else 5)


def onnxruntime_cuda(check: Check, size: str, pair: tuple, workdir: Path, cfg: argparse.Namespace) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers() and not cfg.dry_run:
        check.results["env"]["onnxruntime CUDA EP"] = False
        return
    from dfine.export.onnx import export_onnx
    from dfine.runtime.onnx import OnnxDetector

    def run() -> None:
        path = export_onnx(pair[0], workdir / f"{size}.onnx", cfg.image_size, check=False).path
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if not cfg.dry_run else ["CPUExecutionProvider"]
        detector = OnnxDetector(path, providers=providers)
        images = np.random.rand(1, 3, cfg.image_size, cfg.image_size).astype(np.float32)
        sizes = np.array([[cfg.image_size, cfg.image_size]], dtype=np.int64)
        result = timed(lambda: detector.run(images, sizes), torch.device("cpu"), cfg.iters, cfg.warmup)
        result["provider"] = detector.session.get_providers()[0]
        check.results["latency_ms"].setdefault(size, {}).setdefault("float32", {})["onnxruntime"] = result

    check.run(f"onnxruntime {size}", run, needs=60 if not cfg.dry_run else 5)


# -------------------------------------------------------------------------------------------------------- report
def render(results: dict[str, Any]) -> str:
    env = results.get("env", {})
    lines = ["# GPU check", "", "```", json.dumps(env, indent=1), "```", ""]
    lat = results.get("latency_ms", {})
    if lat:
        lines += ["## Batch-1 latency, median ms (p90)", ""]
        modes = ["ours eager", "ours optimised", "ours cuda-graph", "ours compiled", "ours compiled+graph",
                 "onnxruntime", "transformers"]
        lines += ["| size | dtype | " + " | ".join(modes) + " | speed-up (best ours vs transformers) |",
                  "|---|---|" + "---|" * (len(modes) + 1)]
        for size, per_dtype in lat.items():
            for dtype, row in per_dtype.items():
                cells = [f"{row[m]['median']:.2f} ({row[m]['p90']:.2f})" if m in row else "" for m in modes]
                ours = [row[m]["median"] for m in modes[:-1] if m in row]
                ratio = f"{row['transformers']['median'] / min(ours):.1f}×" if ours and "transformers" in row else ""
                lines.append(f"| {size.upper()} | {dtype} | " + " | ".join(cells) + f" | {ratio} |")
        lines.append("")
    b32 = results.get("batch32", {})
    if b32:
        ours_modes = ["ours optimised", "ours cuda-graph", "ours graph, tf32 head", "ours graph, half head",
                      "ours compiled+graph", "ours compiled+graph, half head"]
        lines += ["## Large batch, fp16: images/s, peak MiB", "", "| size | " + " | ".join(ours_modes) +
                  " | transformers | throughput ratio (best) | memory ratio (optimised) |",
                  "|---|" + "---|" * (len(ours_modes) + 3)]
        for size, row in b32.items():
            def cell(m: str) -> str:
                r = row.get(m)
                return f"{r['images_per_s']:.0f} / {r.get('peak_mib', '-')}" if r else ""
            best = max([row[m]["images_per_s"] for m in ours_modes if m in row] or [0])
            hf = row.get("transformers", {})
            ratio = f"{best / hf['images_per_s']:.2f}×" if hf and best else ""
            mem = (f"{row['ours optimised']['peak_mib'] / hf['peak_mib']:.2f}" if hf.get("peak_mib")
                   and "ours optimised" in row and row["ours optimised"].get("peak_mib") else "")
            lines.append(f"| {size.upper()} | " + " | ".join(cell(m) for m in ours_modes) +
                         f" | {cell('transformers')} | {ratio} | {mem} |")
        lines.append("")
    for name, rows in results.get("profile", {}).items():
        lines += [f"## Profile: {name}, ours optimised fp16 (top kernels)", "", "| kernel | calls | ms | share |",
                  "|---|---|---|---|"]
        lines += [f"| `{r['name']}` | {r['calls']} | {r['ms']:.3f} | {100 * r['share']:.1f}% |" for r in rows]
        lines.append("")
    if results.get("fused_probe"):
        lines += ["## Fused convolution + bias + ReLU probe (batch 32)", "", "```",
                  json.dumps(results["fused_probe"], indent=1), "```", ""]
    if results.get("checks"):
        lines += ["## Correctness", "", "```", json.dumps(results["checks"], indent=1), "```", ""]
    if results.get("errors"):
        lines += ["## Errors", ""] + [f"- {k}: {v}" for k, v in results["errors"].items()] + [""]
    if results.get("skipped"):
        lines += ["## Skipped (deadline)", "", ", ".join(results["skipped"]), ""]
    lines.append(f"Item durations (s): {json.dumps(results.get('items', {}))}")
    return "\n".join(lines)


def goals(check: Check, sizes: list[str], pair: Callable[[str], tuple], device: torch.device,
          cfg: argparse.Namespace) -> None:
    """The open speed goals, cheapest and most informative first: correctness of the fast path on the current
    code (N: deploy vs training form, fp16/bf16 agreement, CUDA-graph replay, no host sync), where the large-batch
    time goes (profile of L), batch-32 throughput of every size with and without a half-precision head beside
    transformers, L batch 1 compiled with and without a CUDA graph (the 3 ms goal), then torch.compile at batch 32
    (S, L, M, X) and, if time is left, L batch 1 with max-autotune."""
    small = [s for s in ("n", "s") if s in sizes][:1]
    for size in small:
        check.run(f"correctness {size}", lambda size=size: correctness(check, size, device, cfg), needs=30)
    big = [s for s in ("l", "s", "m", "x", "n") if s in sizes]
    if big and pair(big[0])[0] is not None:
        kernel_profile(check, big[0], pair(big[0]), device, cfg)
    quick = ("ours cuda-graph", "ours graph, half head", "transformers") if device.type == "cuda" else (
        "ours optimised", "transformers")
    for size in big:
        if pair(size)[0] is not None:
            batch32(check, size, pair(size), device, cfg, modes=quick)
    if "l" in sizes and pair("l")[0] is not None:
        compiled(check, "l", pair("l"), device, cfg)
    if device.type == "cuda":
        for size in [s for s in big if s != "n"]:
            if pair(size)[0] is not None:
                batch32(check, size, pair(size), device, cfg, modes=("ours compiled+graph",))
    if "l" in sizes and pair("l")[0] is not None:
        compiled(check, "l", pair("l"), device, cfg,
                 compile_mode="max-autotune-no-cudagraphs" if device.type == "cuda" else None)


def head_precision(check: Check, sizes: list[str], pair: Callable[[str], tuple], device: torch.device,
                   cfg: argparse.Namespace) -> None:
    """What the head's precision costs (the first goals run: a float32 head is 8 of L's 38 ms at batch 32):
    L batch 1 compiled with a half-precision head (the 3 ms goal), batch 32 with TF32 in the float32 head, and
    batch 32 compiled with a half-precision head."""
    if "l" in sizes and pair("l")[0] is not None:
        compiled(check, "l", pair("l"), device, cfg, half_head=True)
    tf32 = ("ours graph, tf32 head",) if device.type == "cuda" else ()
    for size in [s for s in ("l", "s") if s in sizes]:
        if pair(size)[0] is not None:
            batch32(check, size, pair(size), device, cfg, modes=tf32 + ("ours compiled+graph, half head",)
                    if device.type == "cuda" else ("ours optimised",))


def fused_conv_probe(check: Check, sizes: list[str], pair: Callable[[str], tuple], device: torch.device,
                     cfg: argparse.Namespace) -> None:
    """A probe, not the product: cuDNN's fused convolution + bias + ReLU (``torch.cudnn_convolution_relu``) in
    place of three passes (PyTorch's cuDNN path adds a convolution's bias in a separate kernel). The batch-32
    profile of L showed that bias add as long as the convolutions themselves (7.4 against 7.5 ms of 38)."""
    import torch.nn.functional as F
    from torch import nn

    from dfine.model.deploy.fuse import FusedConv

    if device.type == "cuda":
        op = torch.cudnn_convolution_relu
    else:  # the dry run checks the plumbing with the same arithmetic
        def op(x, w, b, stride, padding, dilation, groups):  # noqa: ANN001, ANN202
            return F.relu(F.conv2d(x, w, b, stride, padding, dilation, groups))
    original = FusedConv.forward

    def fused_forward(self: FusedConv, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        if isinstance(self.activation, nn.ReLU) and isinstance(conv.padding, tuple) and conv.bias is not None:
            return op(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        return original(self, x)

    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    table = check.results.setdefault("fused_probe", {})
    # L and X: their HGNetv2 backbones use plain ReLUs (N, S and M have LAB, whose folded form is a clamp)
    for size in [s for s in ("l", "x", "s") if s in sizes]:
        ours = pair(size)[0]
        if ours is None:
            continue
        row = table.setdefault(size, {})

        def run(ours: torch.nn.Module = ours, row: dict = row) -> None:
            pixels = torch.rand(cfg.big_batch, 3, cfg.image_size, cfg.image_size, device=device)
            outputs = {}
            for head in ("fp32 head", "half head"):
                for fused in (False, True):
                    FusedConv.forward = fused_forward if fused else original
                    try:
                        model = ours.optimize_for_inference(dtype=dtype, device=device, image_size=cfg.image_size,
                                                            batch_size=cfg.big_batch,
                                                            cuda_graph=device.type == "cuda",
                                                            head_dtype=None if head == "half head" else torch.float32)
                        convs = [m for m in model.deployed.modules() if isinstance(m, FusedConv)]
                        row["convs fused / all"] = (f"{sum(isinstance(m.activation, nn.ReLU) for m in convs)} / "
                                                    f"{len(convs)}")
                        result = timed(lambda model=model: model(pixels), device, max(3, cfg.iters // 2), 2)
                        result["images_per_s"] = round(cfg.big_batch * 1000 / result["median"], 1)
                        row[f"{head}{', fused' if fused else ''}"] = result
                        with torch.inference_mode():
                            outputs[(head, fused)] = model(pixels)
                    finally:
                        FusedConv.forward = original
                    free(model)
                a, b = outputs[(head, False)], outputs[(head, True)]
                row[f"{head}: fused vs not, top-100 within 1 px"] = agreement(a, b, 1 / 640)
                row[f"{head}: fused vs not, max abs logit diff"] = float((a.logits - b.logits).abs().max())

        check.run(f"fused probe {size}", run, needs=15)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, small sizes, few iterations: test the script")
    parser.add_argument("--deadline", type=float, default=400.0, help="seconds after which items are skipped")
    parser.add_argument("--sizes", default="n,s,m,l,x")
    parser.add_argument("--focus", choices=("all", "goals", "head", "fused"), default="all",
                        help="goals: only what the open speed goals need (large-batch variants with transformers "
                             "side by side, a kernel profile, torch.compile at batch 32 and L batch 1)")
    cfg = parser.parse_args(argv)
    out = Path(os.environ.get("OUT") or "gpu_results")
    cuda = torch.cuda.is_available() and not cfg.dry_run
    device = torch.device("cuda" if cuda else "cpu")
    cfg.image_size = 640 if not cfg.dry_run else 320
    cfg.iters, cfg.warmup = (20, 3) if not cfg.dry_run else (2, 1)
    cfg.big_batch = 32 if not cfg.dry_run else 2
    cfg.half_dtypes = [torch.float16, torch.bfloat16] if cuda else [torch.bfloat16]
    dtypes = [torch.float16, torch.float32, torch.bfloat16] if cuda else [torch.float32, torch.bfloat16]
    sizes = cfg.sizes.split(",") if not cfg.dry_run else ["n", "s"]
    check = Check(out, cfg.deadline)
    env = check.results["env"]
    env.update({"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
                "gpu": torch.cuda.get_device_name() if cuda else None, "dry_run": cfg.dry_run,
                "image_size": cfg.image_size, "deadline_s": cfg.deadline})
    for module in ("transformers", "onnxruntime", "onnx"):
        try:
            env[module] = __import__(module).__version__
        except Exception:
            env[module] = None
    if not cuda:
        torch.set_num_threads(min(4, os.cpu_count() or 1))

    pairs: dict[str, tuple] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)

        def pair(size: str) -> tuple:
            if size not in pairs:
                built = check.run(f"build {size}", lambda: build_pair(size, workdir), needs=5)
                pairs[size] = built if built is not None else (None, None)
            return pairs[size]

        if cfg.focus in ("goals", "head", "fused"):
            focus = {"goals": goals, "head": head_precision, "fused": fused_conv_probe}[cfg.focus]
            focus(check, sizes, pair, device, cfg)
            sizes = []  # the full check below is skipped
        first = [s for s in ("l", "n") if s in sizes] if not cfg.dry_run else sizes[:1]
        main_dtype = [torch.float16] if cuda else [torch.float32]
        quick_modes = ["ours optimised", "ours cuda-graph", "transformers"] if cuda else ["ours optimised",
                                                                                          "transformers"]
        for size in first:  # 1. the headline numbers
            if pair(size)[0] is not None:
                latency_matrix(check, size, pair(size), device, main_dtype, quick_modes, cfg)
        for size in first:  # 2. correctness
            check.run(f"correctness {size}", lambda size=size: correctness(check, size, device, cfg), needs=30)
        for size in sizes:  # 3. throughput and memory at batch 32
            if pair(size)[0] is not None:
                batch32(check, size, pair(size), device, cfg)
        small = first[-1:]  # 4. torch.compile works (N, the cheapest to compile)
        for size in small:
            if pair(size)[0] is not None:
                compiled(check, size, pair(size), device, cfg)
        all_modes = ["ours eager", "ours optimised"] + (["ours cuda-graph"] if cuda else []) + ["transformers"]
        for size in sizes:  # 5. the full batch-1 matrix
            if pair(size)[0] is not None:
                latency_matrix(check, size, pair(size), device, dtypes, all_modes, cfg)
        for size in first[:1]:  # 6. torch.compile of L
            if size not in small and pair(size)[0] is not None:
                compiled(check, size, pair(size), device, cfg)
        for size in first[::-1]:  # 7. ONNX Runtime on CUDA
            if pair(size)[0] is not None:
                onnxruntime_cuda(check, size, pair(size), workdir, cfg)

    check.results["env"]["total_seconds"] = round(check.elapsed(), 1)
    check.save()
    print(render(check.results))
    print(f"\nwrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
