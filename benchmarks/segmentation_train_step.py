"""Training step time of instance segmentation against detection: the same D-FINE size, images and boxes, one process.

Issue 19's goal: a segmentation step (D-FINE-seg's mask branch, its box-cropped BCE/Dice on every decoder and
denoising layer, the mask focal/Dice matching costs) costs at most 1.5x a detection step. Both models start from the
same random weights (the segmentation model adds the mask branch), train on the same batches of the synthetic shapes
data set (polygon masks) through the training transforms, and are timed alternately, step after step, so that a
machine whose speed drifts (shared cores) slows both alike. A step is forward, loss, backward and the AdamW update.

Usage::

    python benchmarks/segmentation_train_step.py                          # dfine-n at 320, batch 4
    python benchmarks/segmentation_train_step.py --size s --image-size 640 --batch-size 2 --steps 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from dfine.config import DFineConfig
from dfine.data import TrainTransforms, make_synthetic_dataset, resolve_dataset
from dfine.data.collate import BatchCollator
from dfine.model import DFineForInstanceSegmentation, DFineForObjectDetection


def _batches(folder: Path, image_size: int, batch_size: int, count: int) -> list[dict]:
    data = make_synthetic_dataset(folder, num_train=batch_size * count, num_val=1, image_size=(image_size, image_size),
                                  seed=0, empty_fraction=0.0, masks=True)
    dataset = resolve_dataset(data).build("train", TrainTransforms(image_size, stop_epoch=0), masks=True)
    collate = BatchCollator(image_size)
    return [collate([dataset[i * batch_size + k] for k in range(batch_size)]) for i in range(count)]


def _step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict, masks: bool) -> float:
    labels = [{k: v for k, v in t.items() if masks or k != "masks"} for t in batch["labels"]]
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    model(pixel_values=batch["pixel_values"], labels=labels).loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="n", choices=["n", "s", "m", "l", "x"])
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per model (after one warm-up step each)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        batches = _batches(Path(folder), args.image_size, args.batch_size, args.steps + 1)
    config = DFineConfig.from_preset(f"dfine-{args.size}-coco", num_labels=3, freeze_backbone_batch_norms=False)
    torch.manual_seed(0)
    detector = DFineForObjectDetection(config).train()
    segmenter = DFineForInstanceSegmentation(config).train()
    segmenter.load_state_dict(detector.state_dict(), strict=False)  # the shared part starts equal
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-5)
                  for name, model in (("detect", detector), ("segment", segmenter))}
    times: dict[str, list[float]] = {"detect": [], "segment": []}
    for i, batch in enumerate(batches):
        for name, model in (("detect", detector), ("segment", segmenter)):
            seconds = _step(model, optimizers[name], batch, masks=name == "segment")
            if i:  # the first step pays one-off costs (allocations, lazy imports)
                times[name].append(seconds)
    det, seg = statistics.median(times["detect"]), statistics.median(times["segment"])
    objects = sum(len(t["class_labels"]) for b in batches for t in b["labels"]) / len(batches) / args.batch_size
    print(f"D-FINE-{args.size.upper()} at {args.image_size}x{args.image_size}, batch {args.batch_size} "
          f"({objects:.1f} objects per image), {torch.get_num_threads()} threads, median of {args.steps} steps:")
    print(f"  detection step     {det * 1000:8.1f} ms")
    print(f"  segmentation step  {seg * 1000:8.1f} ms")
    print(f"  ratio              {seg / det:8.2f}x  (goal <= 1.5x)")


if __name__ == "__main__":
    main()
