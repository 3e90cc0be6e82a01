"""Training wall-clock time: ``dfine train`` against transformers' D-FINE in a plain AdamW loop, same data and epochs.

For each data set and size it runs, one after the other in this process:

* ``plain``: transformers' ``DFineForObjectDetection`` in the loop of ``benchmarks/plain_loop.py`` (flips only, no
  workers, no EMA, no evaluation), timed from model creation to the end of the last epoch;
* ``ours (flip only)``: ``dfine.train`` with the strong augmentation off (``stop_epoch=0``), the closest to the plain
  loop's data, with everything else as shipped: evaluation at its default interval, EMA, checkpoints, logs;
* ``ours (as shipped)``: ``dfine.train`` with its defaults (the recipe's augmentation);
* with ``--bf16``, the same two ``ours`` rows under ``--amp`` (bf16 autocast on the CPU).

Each ``ours`` row is timed around the whole ``dfine.train`` call (data check, model build, every epoch with its
evaluation and writes), and runs with ``profile=True``, whose per-phase totals (``profile.json``) are printed below the
table. Data sets: ``small`` is ``neon-trees`` (36 training tiles of 416 px, ``benchmarks/real_data.py``), ``large`` is
600 synthetic 320x320 images. Compare ratios within one run of this script: the machine's speed drifts between runs.

Usage::

    python benchmarks/train_throughput.py --output runs/throughput                       # small and large, N and S
    python benchmarks/train_throughput.py --data small --sizes n --epochs 5 --bf16
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import real_data  # noqa: E402  (this folder's own helper)
from plain_loop import train_plain_loop, transformers_model  # noqa: E402

import dfine  # noqa: E402
from dfine.data import make_synthetic_dataset, resolve_dataset  # noqa: E402
from dfine.engine.profiling import breakdown_table  # noqa: E402

DATA = {"small": (416, 4, 10), "large": (320, 8, 3)}  # image size, batch size, default epochs


def prepare(name: str, folder: Path) -> Path:
    data_yaml = folder / name / "data.yaml"
    if data_yaml.is_file():
        return data_yaml
    if name == "small":
        return real_data.build("neon-trees", folder / name)
    return make_synthetic_dataset(folder / name, num_train=600, num_val=60, image_size=(320, 320), seed=0)


def run_plain(size: str, data_yaml: Path, image_size: int, batch_size: int, epochs: int) -> dict[str, Any]:
    started = time.perf_counter()
    torch.manual_seed(0)
    names = list(resolve_dataset(data_yaml).names)
    config = dfine.DFineConfig.from_preset(f"dfine-{size}-coco", id2label=dict(enumerate(names)),
                                           freeze_backbone_batch_norms=size in ("l", "x"))
    model = transformers_model(dfine.DFineForObjectDetection(config))
    loop = train_plain_loop(model, data_yaml, image_size=image_size, batch_size=batch_size, epochs=epochs, lr=2e-4)
    return {"wall": time.perf_counter() - started, "epochs": loop.epoch_seconds, "images": loop.images_per_epoch}


def run_ours(size: str, data_yaml: Path, image_size: int, batch_size: int, epochs: int, output: Path,
             **options: Any) -> dict[str, Any]:
    shutil.rmtree(output, ignore_errors=True)
    started = time.perf_counter()
    dfine.train(data_yaml, model=f"dfine-{size}-coco", pretrained_backbone=False, image_size=image_size,
                epochs=epochs, batch_size=batch_size, output=output, progress=False, profile=True, **options)
    wall = time.perf_counter() - started
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines() if line.strip()]
    images = len(resolve_dataset(data_yaml).index("train").records) // batch_size * batch_size
    return {"wall": wall, "epochs": [r["time"] for r in records], "images": images,
            "profile": json.loads((output / "profile.json").read_text())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", type=Path, default=Path("runs/throughput"))
    p.add_argument("--data", default="small,large")
    p.add_argument("--sizes", default="n,s")
    p.add_argument("--epochs", type=int, default=None, help="default: 10 (small), 3 (large)")
    p.add_argument("--bf16", action="store_true", help="also time ours under bf16 autocast (--amp)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows, profiles = [], []
    for data_name in args.data.split(","):
        image_size, batch_size, default_epochs = DATA[data_name]
        epochs = args.epochs or default_epochs
        data_yaml = prepare(data_name, args.output / "data")
        for size in args.sizes.split(","):
            variants: list[tuple[str, dict[str, Any] | None]] = [
                ("plain loop (transformers)", None), ("ours (flip only)", {"stop_epoch": 0}), ("ours (as shipped)", {})]
            if args.bf16:
                variants += [("ours bf16 (flip only)", {"stop_epoch": 0, "amp": True}),
                             ("ours bf16 (as shipped)", {"amp": True})]
            results = {}
            for label, options in variants:
                print(f"{data_name} {size.upper()} {label}: {epochs} epochs", flush=True)
                if options is None:
                    results[label] = run_plain(size, data_yaml, image_size, batch_size, epochs)
                else:
                    run = args.output / "runs" / f"{data_name}-{size}-{label.replace(' ', '_').strip('()')}"
                    results[label] = run_ours(size, data_yaml, image_size, batch_size, epochs, run, **options)
                    profiles.append((f"{data_name} {size.upper()} {label}", results[label]["profile"]))
            plain = results["plain loop (transformers)"]["wall"]
            for label, r in results.items():
                rows.append(f"| {data_name} | {size.upper()} | {label} | {r['wall']:.0f} | "
                            f"{r['wall'] / epochs:.1f} | {r['images'] * epochs / r['wall']:.2f} | "
                            f"{plain / r['wall']:.2f}x |")
    print(f"\nTraining wall-clock, {args.threads} threads, load average {load:.1f} at the start; each row one run.\n")
    print("| data | size | run | wall s | s / epoch | images / s | speed vs plain loop |")
    print("|---|---|---|---:|---:|---:|---:|")
    print("\n".join(rows))
    for title, seconds in profiles:
        print()
        print(breakdown_table(seconds, f"Where the time went: {title} (dfine train --profile)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
