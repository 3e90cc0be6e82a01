"""Peak activation memory of one forward pass, ours vs transformers, measured on the CPU.

    python benchmarks/memory.py [--sizes n,s,m,l,x] [--batch-size 8] [--output docs/memory.md]

At large batch the activations, not the weights, set a GPU's peak memory. ``peak_activation_bytes`` follows every
tensor the forward creates and reports the most that are alive together: exact and device independent, so this
table can be made without a GPU. bfloat16 has the size of float16, so the "half" rows stand for a GPU's fp16 run
(ours keeps the head in float32, as ``optimize_for_inference`` does). Library workspaces (cuDNN, oneDNN) and the
caching allocator's rounding are not included, so a GPU's ``max_memory_allocated`` is somewhat higher for both.
Random weights, the same on both sides; the pixel batch itself is not counted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from dfine import DFineConfig, DFineForObjectDetection
from dfine.export.benchmark import peak_activation_bytes

SIZES = ["n", "s", "m", "l", "x"]


def measure(size: str, batch: int, image_size: int, workdir: Path) -> dict[str, float]:
    """Peak MiB of: ours optimised (deploy form, bf16 body, fp32 head), ours eager in bf16, transformers in bf16."""
    torch.manual_seed(0)
    ours = DFineForObjectDetection(DFineConfig.from_preset(f"dfine-{size}-coco")).eval()
    pixels = torch.rand(batch, 3, image_size, image_size)
    row: dict[str, float] = {}
    with torch.inference_mode():
        fast = ours.optimize_for_inference(dtype=torch.bfloat16, image_size=image_size)
        row["ours optimised"] = peak_activation_bytes(lambda: fast(pixels)) / 2**20
        fast = None  # free it before the next model (a del would hide the name from the lambda above)
        half = pixels.to(torch.bfloat16)
        eager = DFineForObjectDetection(ours.config).eval()
        eager.load_state_dict(ours.state_dict())
        eager.to(torch.bfloat16)
        row["ours eager"] = peak_activation_bytes(lambda: eager(half)) / 2**20
        eager = None
        try:
            import transformers
        except ImportError:
            return row
        ours.save_pretrained(workdir / size)
        theirs = transformers.DFineForObjectDetection.from_pretrained(workdir / size).eval().to(torch.bfloat16)
        row["transformers"] = peak_activation_bytes(lambda: theirs(pixel_values=half)) / 2**20
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--output", default=None, help="markdown file to write the table to")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))

    columns = ["ours optimised", "ours eager", "transformers"]
    lines = [f"Peak activation memory of one forward, MiB (batch {args.batch_size}, {args.image_size}×"
             f"{args.image_size}, half precision; `python benchmarks/memory.py`)", "",
             "| size | " + " | ".join(columns) + " | optimised / transformers |", "|---|" + "---|" * (len(columns) + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            row = measure(size, args.batch_size, args.image_size, Path(tmp))
            cells = [f"{row[c]:.0f}" if c in row else "" for c in columns]
            ratio = f"{row['ours optimised'] / row['transformers']:.2f}" if "transformers" in row else ""
            lines.append(f"| {size.upper()} | " + " | ".join(cells) + f" | {ratio} |")
            print(lines[-1], flush=True)
    table = "\n".join(lines)
    print("\n" + table)
    if args.output:
        Path(args.output).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
