"""``dfine demo``: train D-FINE-N on a synthetic data set in a few CPU minutes, and show what it learned.

The demo needs no download and no GPU: it draws a small data set of coloured circles, squares and triangles
(:func:`dfine.data.make_synthetic_dataset`), trains the smallest model on it from random weights with
:func:`dfine.train`, evaluates the best weights on the validation images and writes

* ``predictions_grid.jpg``: validation images side by side, "ground truth | prediction" (look at this first);
* ``train/results.png``: the training curves, ``train/val/``: confusion matrix, precision-recall curves and
  per-class AP of the best epoch (both written by the trainer);
* ``predictions/``: every validation image annotated, plus ``predictions.json``;
* ``metrics.json``: COCO AP of the best model on the validation images;
* the trained model itself (a folder ``DFineForObjectDetection.from_pretrained`` and ``dfine predict`` load).

Everything depends only on ``seed`` (the data, the initial weights, the training order), so two runs with the same
seed on the same machine give the same numbers. ``minutes`` instead picks the epoch count from a short timing of
the training step on this machine, which is not reproducible by nature; the chosen count is printed.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from dfine.demo.common import check_demo_arguments, ensure_processor, format_seconds, prepare_output

# Tuned with the trainer on 2 CPU cores. The default run takes about 5 minutes on two free cores and reaches AP 57-74
# on the 40 validation images depending on the seed (57.3 with seed 0, 73.5 with seed 1: at 240 steps the AP is
# still climbing fast, so where it stands at the end moves with every random draw). With the same 240 steps and the
# recipe's strong augmentation (zoom-out, IoU crop, photometric distortion): AP 22 / AP50 39; the trainer's default
# for such a short run from scratch is flips only (docs/training-defaults.md), which the demo takes. So is its
# learning rate, the recipe's 8e-4 not scaled down to the batch: lr 5e-4 and 1.6e-3 learned more slowly. Batch 4 was
# no faster per image than 8; 192 px with 100 queries trained twice as fast per epoch but reached no higher AP in the
# same time.
DEMO_MODEL = "dfine-n-coco"
DEMO_NUM_TRAIN = 100
DEMO_NUM_VAL = 40
DEMO_IMAGE_SIZE = 256  # the N model needs >= 300 tokens at strides 16 and 32 for its 300 queries: 256² gives 320
DEMO_BATCH_SIZE = 8
DEMO_EPOCHS = 20
DEMO_GRID_IMAGES = 6


@dataclass
class DemoResult:
    """What a demo run produced.

    Attributes:
        output_dir: the demo folder.
        model_dir: the trained model (``from_pretrained`` / ``dfine predict --model`` accept it).
        metrics: COCO box metrics of that model on the validation images (``AP``, ``AP50`` … as fractions).
        predictions_grid: the "ground truth | prediction" picture.
        predictions_dir: every validation image annotated, and ``predictions.json``.
        results_plot: the training curves, or None when the trainer wrote none.
        data_yaml: the synthetic data set, usable with ``dfine train --data``.
        epochs: epochs trained.
        seconds: wall time of the whole demo.
        train_metrics: the metrics the trainer reported.
    """

    output_dir: Path
    model_dir: Path
    metrics: dict[str, Any]
    predictions_grid: Path
    predictions_dir: Path
    results_plot: Path | None
    data_yaml: Path
    epochs: int
    seconds: float
    train_metrics: dict[str, Any] = field(default_factory=dict)


def estimate_epochs(minutes: float, num_train: int, num_val: int, image_size: int, batch_size: int,
                    device: str, seed: int, segment: bool = False, num_queries: int = 300) -> int:
    """Epochs that fit in ``minutes``, from the timing of two training steps of D-FINE-N on random data (with
    ``segment``, of D-FINE-N with the mask branch on targets with masks)."""
    from dfine.config.presets import preset_config
    from dfine.model import DFineForInstanceSegmentation, DFineForObjectDetection
    from dfine.utils.device import resolve_device

    torch_device = resolve_device(device)
    torch.manual_seed(seed)
    model_class = DFineForInstanceSegmentation if segment else DFineForObjectDetection
    model = model_class(preset_config(DEMO_MODEL, num_labels=3, freeze_backbone_batch_norms=False,
                                      num_queries=num_queries))
    model.to(torch_device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    pixels = torch.rand(batch_size, 3, image_size, image_size, device=torch_device)
    labels = [{"class_labels": torch.tensor([i % 3], device=torch_device),
               "boxes": torch.tensor([[0.5, 0.5, 0.3, 0.3]], device=torch_device)} for i in range(batch_size)]
    if segment:
        for target in labels:
            target["masks"] = torch.zeros((1, image_size, image_size), dtype=torch.uint8, device=torch_device)
    seconds = 0.0
    for _ in range(2):  # the first step pays one-off costs (allocations, lazy imports)
        start = time.perf_counter()
        optimizer.zero_grad()
        model(pixel_values=pixels, labels=labels).loss.backward()
        optimizer.step()
        if torch_device.type == "cuda":
            torch.cuda.synchronize(torch_device)
        seconds = time.perf_counter() - start
    # An evaluation image costs about a third of a training image; data loading and augmentation add ~15 %.
    epoch_seconds = 1.15 * seconds * (num_train / batch_size + num_val / batch_size / 3)
    budget = minutes * 60 * 0.9  # the rest: data set, final evaluation and pictures
    return max(1, math.floor(budget / epoch_seconds))


def _ground_truth(data_root: Path, class_names: list[str]) -> tuple[dict[str, Any], dict[int, Path]]:
    """The validation ground truth with contiguous label ids (the model's), and image id -> file."""
    raw = json.loads((data_root / "annotations" / "instances_val.json").read_text())
    by_name = {name: index for index, name in enumerate(class_names)}
    label_of = {c["id"]: by_name[c["name"]] for c in raw["categories"]}
    annotations = [{**a, "category_id": label_of[a["category_id"]]} for a in raw["annotations"]]
    categories = [{"id": i, "name": n} for i, n in enumerate(class_names)]
    files = {img["id"]: data_root / "images" / "val" / img["file_name"] for img in raw["images"]}
    return {"images": raw["images"], "annotations": annotations, "categories": categories}, files


def _evaluate_and_draw(model_dir: Path, data_root: Path, output: Path, image_size: int, device: str,
                       progress: bool) -> tuple[dict[str, Any], Path, Path]:
    """COCO metrics of the trained model on the validation images, the comparison grid and annotated images."""
    from dfine.engine.evaluator import CocoEvaluator
    from dfine.imaging.draw import draw_detections, draw_ground_truth, make_grid
    from dfine.predict.files import predict_source
    from dfine.predict.predictor import Predictor

    predictor = Predictor.from_pretrained(model_dir, device=device, image_size=image_size)
    names = predictor.class_names
    ground_truth, files = _ground_truth(data_root, names)
    evaluator = CocoEvaluator(ground_truth, names)
    detections: dict[int, dict[str, torch.Tensor]] = {}
    ids = sorted(files)
    for start in range(0, len(ids), 8):
        batch = ids[start:start + 8]
        # a low threshold: AP integrates over the whole precision-recall curve
        for image_id, det in zip(batch, predictor.predict([files[i] for i in batch], threshold=0.01), strict=True):
            detections[image_id] = det
    evaluator.update(detections)
    result = evaluator.compute()
    metrics = result.as_dict(per_class=True)
    (output / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")

    # The grid: images with objects first (an empty image shows little), each as ground truth | prediction.
    boxes_of: dict[int, list[dict[str, Any]]] = {}
    for ann in ground_truth["annotations"]:
        boxes_of.setdefault(ann["image_id"], []).append(ann)
    chosen = sorted(ids, key=lambda i: (not boxes_of.get(i), i))[:DEMO_GRID_IMAGES]
    pictures, titles = [], []
    for image_id in chosen:
        image = Image.open(files[image_id]).convert("RGB")
        # Small images are enlarged (nearest: pixels stay sharp) so that the labels stay legible.
        scale = max(1, round(384 / max(image.size)))
        big = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
        anns = boxes_of.get(image_id, [])
        gt_boxes = [[scale * a["bbox"][0], scale * a["bbox"][1], scale * (a["bbox"][0] + a["bbox"][2]),
                     scale * (a["bbox"][1] + a["bbox"][3])] for a in anns]
        gt_labels = [a["category_id"] for a in anns]
        det = detections[image_id]
        keep = det["scores"] >= 0.5
        pictures += [draw_ground_truth(big, gt_boxes, gt_labels, names),
                     draw_detections(big, det["boxes"][keep] * scale, det["labels"][keep], det["scores"][keep], names)]
        titles += [f"{files[image_id].name}: ground truth ({len(anns)})",
                   f"prediction ({int(keep.sum())} with score >= 0.5)"]
    grid_path = output / "predictions_grid.jpg"
    make_grid(pictures, columns=4, titles=titles).save(grid_path, quality=92)

    predictions_dir = output / "predictions"
    predict_source(predictor, data_root / "images" / "val", predictions_dir, threshold=0.5, batch_size=8,
                   progress=progress)
    return metrics, grid_path, predictions_dir


def _summary(result: DemoResult, num_train: int, num_val: int, image_size: int) -> str:
    from dfine.data.synthetic import CLASS_NAMES
    from dfine.engine.evaluator import format_ap
    from dfine.engine.trainer import PREVIEW_NAME

    def pct(name: str) -> str:
        return format_ap(result.metrics.get(name))

    out = result.output_dir
    lines = [
        "",
        f"D-FINE demo finished in {format_seconds(result.seconds)}.",
        f"  Trained D-FINE-N from random weights for {result.epochs} epoch{'s' if result.epochs != 1 else ''} on "
        f"{num_train} synthetic {image_size}x{image_size} images ({', '.join(CLASS_NAMES)}).",
        f"  Validation ({num_val} images): AP {pct('AP')}, AP50 {pct('AP50')}, AP75 {pct('AP75')}",
        "",
        "  Look at:",
        f"    {result.predictions_grid}   ground truth | prediction",
    ]
    if result.results_plot is not None:
        lines.append(f"    {result.results_plot}   training curves")
    batch_preview = result.model_dir.parent / PREVIEW_NAME  # the training run's folder holds best/ and the preview
    if batch_preview.exists():
        lines.append(f"    {batch_preview}   a training batch after augmentation, with its boxes")
    report = result.model_dir.parent / "val"  # the trainer's report of the best epoch
    if (report / "confusion_matrix.png").exists():
        lines.append(f"    {report}/   confusion matrix, precision-recall curves, per-class AP")
    lines += [
        f"    {result.predictions_dir}/   every validation image annotated, predictions.json",
        f"    {result.model_dir}/   the trained model",
        "",
        "  Next:",
        f"    dfine predict {out / 'data' / 'images' / 'val'} --model {result.model_dir}",
        "    dfine predict photo.jpg --model ustc-community/dfine-small-coco   # a COCO model (downloads it)",
        "    dfine check --data your_data.yaml --preview labels.jpg          # your own labels, checked (COCO or YOLO)",
        "    dfine train --data your_data.yaml --model dfine-s-coco            # then trained",
    ]
    return "\n".join(lines)


def run_demo(output: str | Path = "runs/demo", minutes: float | None = None, epochs: int | None = None,
             device: str = "auto", seed: int = 0, progress: bool = True, *, num_train: int = DEMO_NUM_TRAIN,
             num_val: int = DEMO_NUM_VAL, image_size: int = DEMO_IMAGE_SIZE,
             batch_size: int = DEMO_BATCH_SIZE) -> DemoResult:
    """Make a synthetic data set, train D-FINE-N on it, evaluate it and draw its predictions.

    Args:
        output: demo folder (created; a folder from an earlier demo is replaced, any other non-empty one refused).
        minutes: training budget; the epoch count is estimated from a timing of the training step here.
        epochs: epochs to train (wins over ``minutes``); default :data:`DEMO_EPOCHS`.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        seed: seeds the data set and the training.
        progress: show progress bars (the summary at the end is always printed).
        num_train, num_val: synthetic images per split.
        image_size: square training and inference size (a multiple of 32, at least 256 for the 300 queries).
        batch_size: training batch size.

    Returns:
        A :class:`DemoResult` with the paths and the validation metrics.

    Raises:
        DFineError: invalid arguments, or an output folder that is not a demo folder.
    """
    from dfine.config import DFineConfig
    from dfine.data import make_synthetic_dataset

    start = time.perf_counter()
    check_demo_arguments(DFineConfig.from_preset(DEMO_MODEL), epochs=epochs, minutes=minutes, seed=seed,
                         image_size=image_size, num_train=num_train, num_val=num_val, batch_size=batch_size)
    from dfine.engine.api import train

    output = Path(output).expanduser()
    prepare_output(output)

    data_yaml = make_synthetic_dataset(output / "data", num_train=num_train, num_val=num_val,
                                       image_size=(image_size, image_size), seed=seed)
    if epochs is None:
        if minutes is not None:
            epochs = estimate_epochs(minutes, num_train, num_val, image_size, batch_size, device, seed)
            print(f"About {minutes:g} minutes of training on this machine: {epochs} epochs (pass --epochs {epochs} "
                  "to repeat this run exactly)")
        else:
            epochs = DEMO_EPOCHS
    # Data loading is cheap at this size; on a small CPU every worker process would take a core from training.
    workers = 0 if not torch.cuda.is_available() or device == "cpu" else 2
    trained = train(data=str(data_yaml), model=DEMO_MODEL, pretrained_backbone=False, image_size=image_size,
                    epochs=epochs, batch_size=batch_size, output=str(output / "train"), device=device,
                    workers=workers, seed=seed, progress=progress)
    model_dir = Path(trained.best_model)
    ensure_processor(model_dir, image_size)
    metrics, grid, predictions_dir = _evaluate_and_draw(model_dir, output / "data", output, image_size, device,
                                                        progress)
    plot = Path(trained.output_dir) / "results.png"
    result = DemoResult(
        output_dir=output, model_dir=model_dir, metrics=metrics, predictions_grid=grid,
        predictions_dir=predictions_dir, results_plot=plot if plot.exists() else None, data_yaml=data_yaml,
        epochs=epochs, seconds=time.perf_counter() - start, train_metrics=dict(getattr(trained, "metrics", {}) or {}))
    print(_summary(result, num_train, num_val, image_size))
    return result
