"""COCO AP and CPU latency per decoder depth K: what ``--decoder-layers K`` trades.

    python benchmarks/decoder_depth.py --model runs/demo/train/best --data runs/demo/data/data.yaml \\
        --output docs/decoder-depth.md

D-FINE's GO-LSD supervises every decoder layer, so each can answer alone (:mod:`dfine.model.depth`). For every K
from 1 to the model's depth this measures, in one process:

* AP / AP50 of ``dfine val --decoder-layers K`` on the data set's validation split (the trained model's accuracy);
* latency, batch 1, ``--threads`` threads (default 2), interleaved round by round: the deploy form in PyTorch fp32
  and the ONNX export in ONNX Runtime fp32, at the model's own input size and at ``--latency-size`` (default 640,
  the released models' size; the same architecture with random weights, since speed does not depend on them).

The table goes to ``--output`` (markdown) and the numbers beside it as JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch


def interleaved(runners: dict[str, Callable[[], Any]], rounds: int, warmup: int) -> dict[str, float]:
    """Median milliseconds per call of every runner, timed round-robin (one call each per round)."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def latency_runners(model: torch.nn.Module, size: int, layers: int, workdir: Path, threads: int
                    ) -> dict[str, Callable[[], Any]]:
    """The deploy form and its ONNX export with ``layers`` decoder layers, on one random input of ``size``."""
    from dfine.export.onnx import export_onnx
    from dfine.runtime.onnx import OnnxDetector

    pixels = torch.rand(1, 3, size, size)
    fast = model.optimize_for_inference(image_size=size, decoder_layers=layers)
    model.set_decoder_layers(layers)
    try:
        path = export_onnx(model, workdir / f"k{layers}-{size}.onnx", size, check=False).path
    finally:
        model.set_decoder_layers(None)
    detector = OnnxDetector(path, ["CPUExecutionProvider"], threads)
    images, sizes = pixels.numpy(), np.array([[size, size]], dtype=np.int64)

    def deploy_call() -> Any:
        with torch.inference_mode():
            return fast(pixels)

    return {f"deploy {size}": deploy_call, f"onnxruntime {size}": lambda: detector.run(images, sizes)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained model (folder, checkpoint or hub id)")
    parser.add_argument("--data", required=True, help="its data set (validation split for AP)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--latency-size", type=int, default=640)
    parser.add_argument("--iters", type=int, default=10, help="timed rounds (default 10)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--output", default=None, help="markdown file (and .json beside it)")
    args = parser.parse_args(argv)

    from dfine import DFineForObjectDetection
    from dfine.config.presets import size_of
    from dfine.engine.api import val
    from dfine.processing.input_size import model_input_size

    torch.set_num_threads(args.threads)
    model = DFineForObjectDetection.from_pretrained(args.model).eval()
    depth = model.config.decoder_layers
    own_size = model_input_size(args.model)[0]
    torch.manual_seed(0)
    random = DFineForObjectDetection(copy.deepcopy(model.config)).eval()
    rows: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for layers in range(1, depth + 1):
            metrics = val(model, args.data, workers=0, device="cpu", decoder_layers=layers, batch_size=4,
                          image_size=own_size)
            runners = latency_runners(model, own_size, layers, Path(tmp), args.threads)
            runners.update(latency_runners(random, args.latency_size, layers, Path(tmp), args.threads))
            rows[layers] = {"AP": 100 * metrics.AP, "AP50": 100 * metrics.AP50,
                            **interleaved(runners, args.iters, args.warmup)}
            print(layers, rows[layers], flush=True)
    name = f"D-FINE-{(size_of(model.config) or 'custom').upper()}"
    columns = [key for key in rows[depth] if key not in ("AP", "AP50")]
    intro = (f"`benchmarks/decoder_depth.py`: COCO AP on the validation split of `{args.data}` at {own_size}×"
             f"{own_size}, and CPU latency (ms, batch 1, {args.threads} threads, median of {args.iters} interleaved "
             f"rounds; at {args.latency_size} the same architecture with random weights).")
    lines = [f"# Decoder depth: {name}, `{args.model}`", "", intro, "",
             "| decoder layers | AP | AP50 | " + " | ".join(f"{c} ms" for c in columns) + " |",
             "|---|---|---|" + "---|" * len(columns)]
    for layers, row in rows.items():
        lines.append(f"| {layers}{' (all)' if layers == depth else ''} | {row['AP']:.1f} | {row['AP50']:.1f} | "
                     + " | ".join(f"{row[c]:.1f}" for c in columns) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        Path(args.output).write_text(text)
        Path(args.output).with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
