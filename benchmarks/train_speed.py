"""Training-step throughput of dfine against Hugging Face transformers' D-FINE, on the same batch.

One step = forward, loss, backward and an AdamW step, in training mode with ``labels=`` (each library computes its
own loss: ours is the original repository's wiring, transformers' differs, see :mod:`dfine.loss.criterion`). Both
models are built from the same config and carry the same weights: ours is written with ``save_pretrained`` and read
back by ``transformers.DFineForObjectDetection.from_pretrained``. The backbone batch norm is frozen or trained as in
the size's recipe (L/X frozen, N/S/M trained), on both sides alike.

Steps of the two libraries alternate after the warm-up, so that a slower or faster phase of a shared machine hits
both alike; the table reports images per second from the median step time.

Usage::

    python benchmarks/train_speed.py                       # CPU, N and S, 2 threads, 3 timed steps (a few minutes)
    python benchmarks/train_speed.py --sizes n,s,m,l,x --steps 5 --output table.md   # every size
    python benchmarks/train_speed.py --devices cuda --gpu-steps 30                   # GPU only: fp32 and bf16

GPU rows (fp32, and bf16 under ``torch.autocast``) are added when CUDA is available; ``--devices`` picks.
transformers is a benchmark-only dependency (``pip install transformers``); without it only our column is filled.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

import dfine
from dfine.config.presets import RECIPES, preset_config


@dataclass
class Row:
    size: str
    device: str
    dtype: str
    ours: float  # images per second
    theirs: float | None

    @property
    def ratio(self) -> float | None:
        return self.ours / self.theirs if self.theirs else None


def random_targets(batch: int, num_labels: int, generator: torch.Generator,
                   device: torch.device) -> list[dict[str, torch.Tensor]]:
    """1-10 boxes per image, normalised cxcywh inside the image, random classes (what a data loader yields)."""
    targets = []
    for _ in range(batch):
        n = int(torch.randint(1, 11, (1,), generator=generator))
        wh = torch.rand(n, 2, generator=generator) * 0.35 + 0.05
        centre = wh / 2 + torch.rand(n, 2, generator=generator) * (1 - wh)
        targets.append({"class_labels": torch.randint(0, num_labels, (n,), generator=generator).to(device),
                        "boxes": torch.cat([centre, wh], dim=1).to(device)})
    return targets


def make_step(model: torch.nn.Module, pixel_values: torch.Tensor, labels: list[dict[str, torch.Tensor]],
              autocast_dtype: torch.dtype | None) -> Callable[[], None]:
    """A closure running one full training step of ``model`` on the fixed batch."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, weight_decay=1e-4)
    device_type = pixel_values.device.type

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        context = (torch.autocast(device_type, dtype=autocast_dtype) if autocast_dtype is not None
                   else contextlib.nullcontext())
        with context:
            outputs = model(pixel_values=pixel_values, labels=labels)
        outputs.loss.backward()
        optimizer.step()

    return step


def timed(step: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def build_models(size: str, device: torch.device, num_labels: int,
                 workdir: Path) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """Ours and transformers' model for one size, with identical config and weights, in training mode."""
    overrides = {} if num_labels == 80 else {"num_labels": num_labels}
    config = preset_config(f"dfine-{size}-coco", freeze_backbone_batch_norms=RECIPES[size].freeze_backbone_norm,
                           **overrides)
    ours = dfine.DFineForObjectDetection(config)
    theirs = None
    try:
        import transformers
    except ImportError:
        transformers = None
    if transformers is not None:
        directory = workdir / f"dfine-{size}"
        ours.save_pretrained(directory)
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        theirs, info = transformers.DFineForObjectDetection.from_pretrained(directory, output_loading_info=True)
        problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
        if problems:  # the comparison is only meaningful with identical weights
            raise RuntimeError(f"transformers did not load our weights exactly: {problems}")
        theirs = theirs.to(device).train()
    return ours.to(device).train(), theirs


def bench_size(size: str, device: torch.device, dtypes: list[str], args: argparse.Namespace,
               workdir: Path) -> list[Row]:
    generator = torch.Generator().manual_seed(args.seed)
    pixel_values = torch.rand(args.batch_size, 3, args.image_size, args.image_size, generator=generator).to(device)
    labels = random_targets(args.batch_size, args.num_labels, generator, device)
    ours, theirs = build_models(size, device, args.num_labels, workdir)
    steps = args.steps if device.type == "cpu" else args.gpu_steps
    warmup = args.warmup if device.type == "cpu" else args.gpu_warmup
    rows = []
    for dtype_name in dtypes:
        autocast = {"fp32": None, "bf16": torch.bfloat16}[dtype_name]
        torch.manual_seed(args.seed)  # denoising noise and matching start the same for every row
        runs = {"ours": make_step(ours, pixel_values, labels, autocast)}
        if theirs is not None:
            runs["transformers"] = make_step(theirs, pixel_values, labels, autocast)
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(warmup):
            for step in runs.values():
                step()
        for _ in range(steps):
            for name, step in runs.items():
                times[name].append(timed(step, device))
        speed = {name: args.batch_size / statistics.median(t) for name, t in times.items()}
        row = Row(size.upper(), device.type if device.type == "cpu" else torch.cuda.get_device_name(device),
                  dtype_name, speed["ours"], speed.get("transformers"))
        print(f"  {row.size} {row.device} {row.dtype}: ours {row.ours:.2f} img/s"
              + (f", transformers {row.theirs:.2f} img/s, ratio {row.ratio:.2f}" if row.theirs else ""), flush=True)
        rows.append(row)
    del ours, theirs
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def markdown_table(rows: list[Row], args: argparse.Namespace) -> str:
    def fmt(value: float | None, digits: int = 2) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    header = (f"Training step (forward + loss + backward + AdamW), batch {args.batch_size} at "
              f"{args.image_size}x{args.image_size}, 1-10 boxes per image; median of {args.steps} CPU steps "
              f"({args.threads} thread{'s' if args.threads != 1 else ''}) / {args.gpu_steps} GPU steps after warm-up; "
              f"torch {torch.__version__}.")
    lines = [header, "", "| size | device | dtype | ours img/s | transformers img/s | ratio (ours / transformers) |",
             "|---|---|---|---:|---:|---:|"]
    lines += [f"| {r.size} | {r.device} | {r.dtype} | {fmt(r.ours)} | {fmt(r.theirs)} | {fmt(r.ratio)} |"
              for r in rows]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", default="n,s", help="comma-separated sizes among n,s,m,l,x (default n,s)")
    p.add_argument("--devices", default="cpu,cuda", help="cpu and/or cuda; cuda rows are skipped without CUDA")
    p.add_argument("--gpu-dtypes", default="fp32,bf16", help="GPU rows: fp32 and/or bf16 (autocast)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--image-size", type=int, default=640)
    p.add_argument("--num-labels", type=int, default=80)
    p.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads; default 2)")
    p.add_argument("--steps", type=int, default=3, help="timed CPU steps per library (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="CPU warm-up steps per library (default 1)")
    p.add_argument("--gpu-steps", type=int, default=20, help="timed GPU steps per library (default 20)")
    p.add_argument("--gpu-warmup", type=int, default=5, help="GPU warm-up steps per library (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, default=None, help="also write the markdown table to this file")
    args = p.parse_args(argv)
    args.sizes = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in args.sizes if s not in RECIPES]
    if unknown:
        p.error(f"unknown sizes {unknown}; choose among {','.join(RECIPES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    devices = []
    for name in (d.strip() for d in args.devices.split(",") if d.strip()):
        if name == "cuda" and not torch.cuda.is_available():
            print("CUDA not available: GPU rows skipped", file=sys.stderr)
            continue
        devices.append(torch.device(name))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            for device in devices:
                dtypes = ["fp32"] if device.type == "cpu" else args.gpu_dtypes.split(",")
                print(f"D-FINE-{size.upper()} on {device}", flush=True)
                rows += bench_size(size, device, dtypes, args, Path(tmp))
    table = markdown_table(rows, args)
    print()
    print(table)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
