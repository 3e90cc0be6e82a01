"""COCO AP and CPU latency per decoder depth K: what ``--decoder-layers K`` trades.

    python benchmarks/decoder_depth.py --model runs/demo/best --data runs/demo/data/data.yaml \\
        --output docs/decoder-depth.md

D-FINE's GO-LSD supervises every decoder layer, so each can answer alone (:mod:`dfine.model.depth`). For every K
from 1 to the model's depth this measures, in one process:

* AP / AP50 of ``dfine val --decoder-layers K`` on the data set's validation split (the trained model's accuracy);
* latency, batch 1, ``--threads`` threads (default 2), every depth interleaved round by round: the ONNX export in
  ONNX Runtime fp32 and, with OpenVINO installed, its IR in every precision the CPU runs natively, at the model's own
  input size and at ``--latency-size`` (default 640, the released models' size; the same architecture with random
  weights, since speed does not depend on them).

The table goes to ``--output`` (markdown) and the numbers beside it as JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency import interleaved_medians  # noqa: E402  (this folder's own timing helper)


def latency_runners(model: torch.nn.Module, size: int, layers: int, workdir: Path, threads: int
                    ) -> dict[str, Callable[[], Any]]:
    """The CPU deployment paths of ``model`` with ``layers`` decoder layers, on one random input of ``size``: its
    ONNX export in ONNX Runtime fp32 and, where OpenVINO is installed, the IR made from it in every precision the
    CPU runs natively."""
    from dfine.export.onnx import export_onnx
    from dfine.runtime.onnx import OnnxDetector

    model.set_decoder_layers(layers)
    try:
        path = export_onnx(model, workdir / f"k{layers}-{size}.onnx", size, check=False).path
    finally:
        model.set_decoder_layers(None)
    images = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    sizes = np.array([[size, size]], dtype=np.int64)
    detectors = {f"onnxruntime fp32 {size}": OnnxDetector(path, ["CPUExecutionProvider"], threads)}
    try:
        from dfine.export.openvino import convert_onnx, save_ir
        from dfine.runtime.openvino import OpenVinoDetector, supported_precisions

        ir = path.with_suffix(".xml")
        save_ir(convert_onnx(path, {}), ir)
        for precision in supported_precisions():
            detectors[f"openvino {precision} {size}"] = OpenVinoDetector(ir, threads=threads, precision=precision)
    except ImportError:
        pass
    return {name: (lambda d=detector: d.run(images, sizes)) for name, detector in detectors.items()}


def _load() -> float:
    """The 1-minute load average: timings on a busy machine are slower for every contender alike, not comparable."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


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
    load_before = _load()
    with tempfile.TemporaryDirectory() as tmp:
        runners: dict[str, Callable[[], Any]] = {}
        for layers in range(1, depth + 1):
            metrics = val(model, args.data, workers=0, device="cpu", decoder_layers=layers, batch_size=4,
                          image_size=own_size)
            rows[layers] = {"AP": 100 * metrics.AP, "AP50": 100 * metrics.AP50}
            for name, run in {**latency_runners(model, own_size, layers, Path(tmp), args.threads),
                              **latency_runners(random, args.latency_size, layers, Path(tmp), args.threads)}.items():
                runners[f"{layers}|{name}"] = run
        # every depth in the same rounds, so that a busy machine slows each alike
        for key, median in interleaved_medians(runners, args.iters, args.warmup).items():
            layers, name = key.split("|")
            rows[int(layers)][name] = median
    for layers, row in rows.items():
        print(layers, row, flush=True)
    name = f"D-FINE-{(size_of(model.config) or 'custom').upper()}"
    columns = [key for key in rows[depth] if key not in ("AP", "AP50")]
    command = "python benchmarks/decoder_depth.py " + " ".join(argv if argv is not None else sys.argv[1:])
    intro = (f"`{command}`: COCO AP on the validation split of `{args.data}` at {own_size}×"
             f"{own_size}, and CPU latency (ms, batch 1, {args.threads} threads, median of {args.iters} interleaved "
             f"rounds; at {args.latency_size} the same architecture with random weights). 1-minute load average "
             f"before / after: {load_before:.1f} / {_load():.1f}.")
    caveat = ("Latencies measured on a shared machine under that load: compare them only as ratios within this "
              "table (all depths and runtimes were timed in the same interleaved rounds), not as absolute times.")
    lines = [f"# Decoder depth: {name}, `{args.model}`", "", intro, "", caveat, "",
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
