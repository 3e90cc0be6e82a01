"""AP per epoch budget on small real data: dfine's training engine against transformers' D-FINE in a plain loop.

For each data set (``benchmarks/real_data.py``: ``neon-trees``, ``dsb-nuclei``) and each start (``scratch``: D-FINE-N
with random weights, the backbone too, since no ImageNet weights can be downloaded here; ``finetune``: from a
D-FINE-N checkpoint trained on synthetic shapes, made once by this script), it trains:

* ``ours-<name>``: ``dfine.train`` with the settings of :data:`OURS` (the defaults, the original linear LR rule,
  other rules, the DEIM recipe), one run per epoch budget, reporting the AP of ``best/`` (what a user gets);
* ``hf@<lr>``: transformers' ``DFineForObjectDetection`` in the plain AdamW loop of ``benchmarks/plain_loop.py``, one
  run evaluated after each budget, at each learning rate of ``--hf-lrs`` (a sweep of three, as a user would try).

Both sides get the same data, images, batch size, input size and initial weights, and are scored by the same COCO
evaluator. Every run's result is kept in ``OUTPUT/results/*.json``, so an interrupted benchmark continues where it
stopped; the table is printed from those files (``--table-only`` prints it without training).

Usage::

    python benchmarks/train_quality.py --output runs/quality                     # everything (hours on 2 CPU cores)
    python benchmarks/train_quality.py --data neon-trees --starts scratch --runs ours-default,ours-linear,hf
    python benchmarks/train_quality.py --output runs/quality --table-only --markdown docs/training-defaults.md
    dfine demo --output runs/demo   # then fine-tune from the demo's model instead of training one here:
    python benchmarks/train_quality.py --starts finetune --checkpoint runs/demo/train/best
"""

from __future__ import annotations

import argparse
import json
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
from dfine.data import make_synthetic_dataset  # noqa: E402
from dfine.engine.hparams import recipe_stop_epoch  # noqa: E402

# name -> keyword arguments of dfine.train on top of the common ones
# (RECIPE_STOP: the recipe's share of strong-augmentation epochs, which a short run from scratch no longer gets by
# default, asked for explicitly so that the LR rules are compared as they were measured first)
RECIPE_STOP = "recipe"
OURS: dict[str, dict[str, Any]] = {
    "default": {},
    "linear": {"lr_scaling": "linear", "stop_epoch": RECIPE_STOP},
    "sqrt": {"lr_scaling": "sqrt", "stop_epoch": RECIPE_STOP},
    "none": {"lr_scaling": "none", "stop_epoch": RECIPE_STOP},
    "deim": {"recipe": "deim"},
    "noaug": {"lr_scaling": "none", "stop_epoch": 0},  # the recipe's LR, strong augmentation off (flips only)
}
DATA = {  # name -> (image size, epoch budgets, batch size)
    "neon-trees": (416, (30, 60), 4),
    "dsb-nuclei": (256, (60, 120), 4),
}
HF_LRS = (1e-4, 3e-4, 1e-3)


def checkpoint(folder: Path, seed: int) -> Path:
    """A D-FINE-N trained on 200 synthetic 256x256 images (3 shapes) for 30 epochs: the model to fine-tune from."""
    best = folder / "pretrain" / "train" / "best"
    if (best / "model.safetensors").is_file():
        return best
    data = make_synthetic_dataset(folder / "pretrain" / "data", num_train=200, num_val=40, image_size=(256, 256),
                                  seed=seed)
    shutil.rmtree(folder / "pretrain" / "train", ignore_errors=True)
    dfine.train(data, model="dfine-n-coco", pretrained_backbone=False, image_size=256, epochs=30, batch_size=8,
                output=folder / "pretrain" / "train", seed=seed, progress=False)
    return best


def run_ours(name: str, data_yaml: Path, start: str | Path, image_size: int, epochs: int, batch_size: int,
             output: Path, seed: int) -> dict[str, Any]:
    run = output / "runs" / f"{data_yaml.parent.name}-{Path(str(start)).name}-ours-{name}-{epochs}"
    shutil.rmtree(run, ignore_errors=True)
    started = time.perf_counter()
    model = "dfine-n-coco" if start == "scratch" else str(start)
    options = dict(OURS[name])
    if options.get("stop_epoch") == RECIPE_STOP:
        options["stop_epoch"] = recipe_stop_epoch("n", epochs, fine_tune=start != "scratch")
    result = dfine.train(data_yaml, model=model, pretrained_backbone=False, image_size=image_size, epochs=epochs,
                         batch_size=batch_size, output=run, seed=seed, progress=False, **options)
    hparams = json.loads((run / "hparams.json").read_text())
    return {"AP": result.metrics.get("AP"), "AP50": result.metrics.get("AP50"), "lr": hparams["lr"],
            "seconds": time.perf_counter() - started}


def run_hf(lr: float, data_yaml: Path, start: str | Path, image_size: int, budgets: tuple[int, ...],
           batch_size: int, seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    names = list(dfine.data.resolve_dataset(data_yaml).names)
    if start == "scratch":
        ours = dfine.DFineForObjectDetection(dfine.DFineConfig.from_preset(
            "dfine-n-coco", id2label=dict(enumerate(names)), freeze_backbone_batch_norms=False))
    else:
        ours = dfine.DFineForObjectDetection.from_pretrained(start, id2label=dict(enumerate(names)))
    model = transformers_model(ours)
    started = time.perf_counter()
    loop = train_plain_loop(model, data_yaml, image_size=image_size, batch_size=batch_size, epochs=max(budgets),
                            lr=lr, eval_epochs=budgets, seed=seed)
    return {"lr": lr, "ap": {str(k): v for k, v in loop.ap.items()}, "seconds": time.perf_counter() - started}


def table(output: Path) -> str:
    rows = []
    for path in sorted((output / "results").glob("*.json")):
        rows.append(json.loads(path.read_text()))
    lines = ["| data | start | run | LR | AP50 / AP (%) at each epoch budget |", "|---|---|---|---|---|"]
    grouped: dict[tuple[str, str, str], dict[int, dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault((row["data"], row["start"], row["run"]), {})[row["epochs"]] = row
    for (data, start, run), by_epochs in sorted(grouped.items()):
        cells = []
        budgets = sorted(by_epochs)
        lr = next(iter(by_epochs.values()))["lr"]
        for epochs in budgets:
            row = by_epochs[epochs]
            cells.append(f"{epochs} ep: {100 * row['AP50']:.1f} / {100 * row['AP']:.1f}" if row["AP"] is not None
                         else f"{epochs} ep: n/a")
        lines.append(f"| {data} | {start} | {run} | {lr:.3g} | " + "; ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", type=Path, default=Path("runs/quality"))
    p.add_argument("--data", default=",".join(DATA), help="comma-separated: " + ", ".join(DATA))
    p.add_argument("--starts", default="scratch,finetune")
    p.add_argument("--runs", default=",".join([*(f"ours-{n}" for n in ("default", "linear", "deim")), "hf"]),
                   help="ours-<" + "|".join(OURS) + "> and/or hf (the plain loop at each --hf-lrs)")
    p.add_argument("--hf-lrs", default=",".join(f"{lr:g}" for lr in HF_LRS))
    p.add_argument("--budgets", default=None, help="epoch budgets for every data set (default: per data set)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="the model to fine-tune from (a from_pretrained folder, e.g. `dfine demo`'s train/best); "
                        "default: one this script trains on synthetic shapes once")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--table-only", action="store_true")
    p.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = args.output / "results"
    results.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        for data_name in args.data.split(","):
            image_size, budgets, batch_size = DATA[data_name]
            if args.budgets:
                budgets = tuple(int(b) for b in args.budgets.split(","))
            data_yaml = args.output / "data" / data_name / "data.yaml"
            if not data_yaml.is_file():
                data_yaml = real_data.build(data_name, args.output / "data" / data_name)
            for start_name in args.starts.split(","):
                start: str | Path = ("scratch" if start_name == "scratch"
                                     else args.checkpoint or checkpoint(args.output, args.seed))
                for run in args.runs.split(","):
                    if run == "hf":
                        for lr in (float(v) for v in args.hf_lrs.split(",")):
                            name = f"hf@{lr:g}"
                            done = [results / f"{data_name}-{start_name}-{name}-{b}.json" for b in budgets]
                            if all(d.exists() for d in done):
                                continue
                            print(f"{data_name} {start_name} {name} {budgets}", flush=True)
                            out = run_hf(lr, data_yaml, start, image_size, budgets, batch_size, args.seed)
                            for b, path in zip(budgets, done, strict=True):
                                ap = out["ap"][str(b)]
                                path.write_text(json.dumps({"data": data_name, "start": start_name, "run": name,
                                                            "epochs": b, "lr": lr, **ap,
                                                            "seconds": out["seconds"]}))
                        continue
                    name = run.removeprefix("ours-")
                    for b in budgets:
                        path = results / f"{data_name}-{start_name}-ours-{name}-{b}.json"
                        if path.exists():
                            continue
                        print(f"{data_name} {start_name} ours-{name} {b} epochs", flush=True)
                        out = run_ours(name, data_yaml, start, image_size, b, batch_size, args.output, args.seed)
                        path.write_text(json.dumps({"data": data_name, "start": start_name, "run": f"ours-{name}",
                                                    "epochs": b, **out}))
    text = table(args.output)
    print(text)
    if args.markdown is not None:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
