"""``dfine demo --task segment``: train D-FINE-N with D-FINE-seg's mask branch on synthetic shapes with polygon masks,
in a few CPU minutes, and show the masks it learned.

The same offline recipe as the detection demo (:mod:`dfine.demo.detection`): circles, squares and triangles drawn by
:func:`dfine.data.make_synthetic_dataset`, here with each object's outline as a COCO polygon (``masks=True``); D-FINE-N
from random weights trained with :func:`dfine.train` (``task="segment"``: the mask losses and matching costs of
D-FINE-seg, ArgoHA/D-FINE-seg ``dfine_seg/d_fine/dfine_criterion.py``); the best weights evaluated with
:func:`dfine.val`, which scores COCO box and mask AP. It writes

* ``predictions_grid.jpg``: validation images side by side, "ground truth | prediction", masks filled;
* ``metrics.json``: COCO box metrics of the best model on the validation images, its mask metrics under ``segm``;
* ``train/``: the training run (curves, the best epoch's report) and ``train/best/``, the trained model
  (``DFineForInstanceSegmentation.from_pretrained`` loads it).

Deterministic for a ``seed``, as the detection demo.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dfine.demo.common import check_demo_arguments, ensure_processor, format_seconds, prepare_output
from dfine.demo.detection import DEMO_MODEL, estimate_epochs

# Tuned with the trainer on 2 CPU cores: a segmentation step of D-FINE-N costs ~1.4x a detection step (its mask
# losses on every decoder and denoising layer), so the demo trains on fewer, smaller images than the detection demo
# for about the same time. 224 px with 150 queries: 7x7 + 14x14 = 245 encoder positions.
SEGMENT_DEMO_NUM_TRAIN = 64
SEGMENT_DEMO_NUM_VAL = 24
SEGMENT_DEMO_IMAGE_SIZE = 224
SEGMENT_DEMO_QUERIES = 150
SEGMENT_DEMO_BATCH_SIZE = 8
SEGMENT_DEMO_EPOCHS = 24
_GRID_IMAGES = 6
_MASK_ALPHA = 0.45  # how much of a filled mask's colour covers the picture


@dataclass
class SegmentationDemoResult:
    """What a segmentation demo run produced.

    Attributes:
        output_dir: the demo folder.
        model_dir: the trained model (``DFineForInstanceSegmentation.from_pretrained`` accepts it).
        metrics: COCO box metrics of that model on the validation images, and its mask metrics under ``segm``
            (fractions).
        predictions_grid: the "ground truth | prediction" picture.
        data_yaml: the synthetic data set, usable with ``dfine train --task segment --data``.
        epochs: epochs trained.
        seconds: wall time of the whole demo.
        train_metrics: the metrics the trainer reported.
    """

    output_dir: Path
    model_dir: Path
    metrics: dict[str, Any]
    predictions_grid: Path
    data_yaml: Path
    epochs: int
    seconds: float
    train_metrics: dict[str, Any] = field(default_factory=dict)


def fill_masks(image: Image.Image, masks: Any, labels: Any) -> Image.Image:
    """``image`` with each (H, W) boolean mask filled translucently in its class colour (boxes are drawn after)."""
    from dfine.imaging.draw import class_color

    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    for mask, label in zip(np.asarray(masks, dtype=bool), np.asarray(labels).reshape(-1), strict=True):
        pixels[mask] = (1 - _MASK_ALPHA) * pixels[mask] + _MASK_ALPHA * np.asarray(class_color(int(label)))
    return Image.fromarray(pixels.round().astype(np.uint8))


def _predict(model_dir: Path, files: list[Path], device: str) -> list[dict[str, torch.Tensor]]:
    """Each image's instances with score >= 0.5, as ``DFineImageProcessor.post_process_instance_segmentation``."""
    from dfine.model import DFineForInstanceSegmentation
    from dfine.processing.processor import DFineImageProcessor
    from dfine.utils.device import resolve_device

    dev = resolve_device(device)
    model = DFineForInstanceSegmentation.from_pretrained(model_dir).to(dev).eval()
    processor = DFineImageProcessor.from_pretrained(model_dir)
    images = [Image.open(f).convert("RGB") for f in files]
    inputs = processor(images, return_tensors="pt")
    with torch.no_grad():
        outputs = model(inputs["pixel_values"].to(dev))
    sizes = [(im.height, im.width) for im in images]
    return [{k: v.cpu() for k, v in r.items()}
            for r in processor.post_process_instance_segmentation(outputs, threshold=0.5, target_sizes=sizes)]


def _draw_grid(model_dir: Path, data_yaml: Path, output: Path, device: str) -> Path:
    """Validation images with objects, each as ground truth | prediction, masks filled and boxes drawn."""
    from dfine.data import resolve_dataset
    from dfine.imaging.draw import draw_detections, draw_ground_truth, make_grid

    dataset = resolve_dataset(data_yaml).build("val", masks=True)
    names = dataset.class_names
    chosen = [i for i in range(len(dataset)) if len(dataset.index.records[i].boxes)][:_GRID_IMAGES]
    files = [dataset.index.records[i].path for i in chosen]
    predictions = _predict(model_dir, files, device)
    pictures, titles = [], []
    for i, path, det in zip(chosen, files, predictions, strict=True):
        image, target = dataset.load_item(i)
        picture = Image.fromarray(image.permute(1, 2, 0).numpy())
        scale = max(1, round(384 / max(picture.size)))  # enlarged (nearest) so that the labels stay legible

        def big(p: Image.Image, s: int = scale) -> Image.Image:
            return p.resize((p.width * s, p.height * s), Image.Resampling.NEAREST)

        truth = big(fill_masks(picture, target["masks"].numpy(), target["labels"].numpy()))
        predicted = big(fill_masks(picture, det["masks"].numpy(), det["labels"].numpy()))
        pictures += [draw_ground_truth(truth, target["boxes"].numpy() * scale, target["labels"].numpy(), names),
                     draw_detections(predicted, det["boxes"].numpy() * scale, det["labels"].numpy(),
                                     det["scores"].numpy(), names)]
        titles += [f"{path.name}: ground truth ({len(target['labels'])})",
                   f"prediction ({len(det['labels'])} with score >= 0.5)"]
    grid = output / "predictions_grid.jpg"
    make_grid(pictures, columns=4, titles=titles).save(grid, quality=92)
    return grid


def _summary(result: SegmentationDemoResult, num_train: int, num_val: int, image_size: int) -> str:
    from dfine.data.synthetic import CLASS_NAMES
    from dfine.engine.evaluator import format_ap

    box, mask = result.metrics, result.metrics.get("segm") or {}
    lines = [
        "",
        f"D-FINE instance segmentation demo finished in {format_seconds(result.seconds)}.",
        (f"  Trained D-FINE-N with D-FINE-seg's mask branch from random weights for {result.epochs} "
         f"epoch{'s' if result.epochs != 1 else ''} on {num_train} synthetic {image_size}x{image_size} images "
         f"({', '.join(CLASS_NAMES)}, polygon masks)."),
        (f"  Validation ({num_val} images): mask AP {format_ap(mask.get('AP'))}, AP50 {format_ap(mask.get('AP50'))}; "
         f"box AP {format_ap(box.get('AP'))}, AP50 {format_ap(box.get('AP50'))}"),
        "",
        "  Look at:",
        f"    {result.predictions_grid}   ground truth | prediction",
        f"    {result.model_dir.parent}/   the training run (results.png, val/)",
        f"    {result.model_dir}/   the trained model",
        "",
        "  Next:",
        f"    dfine val --model {result.model_dir} --data {result.data_yaml}",
        "    dfine train --task segment --data your_data.yaml --model dfine-s-coco   # COCO polygons or YOLO-seg",
    ]
    return "\n".join(lines)


def run_segmentation_demo(output: str | Path = "runs/demo-segment", minutes: float | None = None,
                          epochs: int | None = None, device: str = "auto", seed: int = 0, progress: bool = True, *,
                          num_train: int = SEGMENT_DEMO_NUM_TRAIN, num_val: int = SEGMENT_DEMO_NUM_VAL,
                          image_size: int = SEGMENT_DEMO_IMAGE_SIZE,
                          batch_size: int = SEGMENT_DEMO_BATCH_SIZE) -> SegmentationDemoResult:
    """Make a synthetic data set with polygon masks, train D-FINE-N for instance segmentation on it, evaluate its
    masks and boxes and draw them.

    Args:
        output: demo folder (created; a folder from an earlier demo is replaced, any other non-empty one refused).
        minutes: training budget; the epoch count is estimated from a timing of the training step here.
        epochs: epochs to train (wins over ``minutes``); default :data:`SEGMENT_DEMO_EPOCHS`.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        seed: seeds the data set and the training.
        progress: show progress bars (the summary at the end is always printed).
        num_train, num_val: synthetic images per split.
        image_size: square training and inference size (a multiple of 32, at least 224 for the 150 queries).
        batch_size: training batch size.

    Returns:
        A :class:`SegmentationDemoResult` with the paths and the validation metrics.

    Raises:
        DFineError: invalid arguments, or an output folder that is not a demo folder.
    """
    from dfine.config import DFineConfig
    from dfine.data import make_synthetic_dataset
    from dfine.engine.api import train, val

    start = time.perf_counter()
    check_demo_arguments(DFineConfig.from_preset(DEMO_MODEL, num_queries=SEGMENT_DEMO_QUERIES), epochs=epochs,
                         minutes=minutes, seed=seed, image_size=image_size, num_train=num_train, num_val=num_val,
                         batch_size=batch_size)
    output = Path(output).expanduser()
    prepare_output(output)
    data_yaml = make_synthetic_dataset(output / "data", num_train=num_train, num_val=num_val,
                                       image_size=(image_size, image_size), seed=seed, masks=True)
    if epochs is None:
        if minutes is not None:
            epochs = estimate_epochs(minutes, num_train, num_val, image_size, batch_size, device, seed, segment=True,
                                     num_queries=SEGMENT_DEMO_QUERIES)
            print(f"About {minutes:g} minutes of training on this machine: {epochs} epochs (pass --epochs {epochs} "
                  "to repeat this run exactly)")
        else:
            epochs = SEGMENT_DEMO_EPOCHS
    workers = 0 if not torch.cuda.is_available() or device == "cpu" else 2
    trained = train(data=str(data_yaml), model=DEMO_MODEL, task="segment", pretrained_backbone=False,
                    image_size=image_size, epochs=epochs, batch_size=batch_size, output=str(output / "train"),
                    device=device, workers=workers, seed=seed, progress=progress,
                    num_queries=SEGMENT_DEMO_QUERIES)
    model_dir = Path(trained.best_model)
    ensure_processor(model_dir, image_size)
    metrics = val(model_dir, data_yaml, device=device, workers=workers, progress=progress).as_dict(per_class=True)
    (output / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    grid = _draw_grid(model_dir, data_yaml, output, device)
    result = SegmentationDemoResult(
        output_dir=output, model_dir=model_dir, metrics=metrics, predictions_grid=grid, data_yaml=data_yaml,
        epochs=epochs, seconds=time.perf_counter() - start, train_metrics=dict(trained.metrics or {}))
    print(_summary(result, num_train, num_val, image_size))
    return result
