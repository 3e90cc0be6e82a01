"""High-level prediction: a model, its processor and a device, from file names to detections on disk.

``Predictor`` is what ``dfine predict`` runs; it is also the shortest way to use a model from Python::

    predictor = Predictor.from_pretrained("ustc-community/dfine-small-coco")
    detections = predictor.predict(["street.jpg"])  # list of {"scores", "labels", "boxes"} in pixels
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from dfine.errors import DFineError
from dfine.io import list_images, load_image
from dfine.processor import PREPROCESSOR_CONFIG_NAME, DFineImageProcessor

logger = logging.getLogger("dfine")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available; anything else is passed to ``torch.device`` (checked)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DFineError(f"--device {device} was asked for, but no CUDA device is available")
    return device


def load_processor(model_source: str | Path, image_size: int | None = None) -> DFineImageProcessor:
    """The processor stored beside a local model, else the checkpoints' defaults; ``image_size`` overrides."""
    path = Path(model_source)
    processor = DFineImageProcessor()
    if path.is_dir() and (path / PREPROCESSOR_CONFIG_NAME).exists():
        processor = DFineImageProcessor.from_pretrained(path)
    if image_size is not None:
        processor.size = {"height": int(image_size), "width": int(image_size)}
    return processor


@dataclass
class Predictor:
    """A model ready for inference: eval mode, on ``device``, with its processor and class names."""

    model: torch.nn.Module
    processor: DFineImageProcessor = field(default_factory=DFineImageProcessor)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32

    @classmethod
    def from_pretrained(cls, model: str | Path, device: str | torch.device = "auto", half: bool = False,
                        image_size: int | None = None, compile: bool = False) -> Predictor:
        """Load a model for inference.

        ``half`` (CUDA only) and ``compile`` switch to :func:`dfine.export.fast.optimize_for_inference`: the deploy
        form with fp16 backbone/encoder (the head stays fp32) and/or ``torch.compile``; otherwise the model runs
        as loaded (numerically identical to transformers).
        """
        from dfine.model import DFineForObjectDetection

        device = resolve_device(device)
        network = DFineForObjectDetection.from_pretrained(model).to(device).eval()
        processor = load_processor(model, image_size)
        if half and device.type != "cuda":
            raise DFineError("--half needs a CUDA device (half precision on the CPU is slower and less accurate)")
        if half or compile:
            from dfine.export.fast import optimize_for_inference

            size = (processor.size["height"], processor.size["width"])
            network = optimize_for_inference(network, dtype=torch.float16 if half else torch.float32, device=device,
                                             compile=compile, image_size=size)
        return cls(network, processor, device, torch.float32)

    @property
    def class_names(self) -> list[str]:
        return self.model.config.class_names

    @torch.inference_mode()
    def predict(self, images: list[Image.Image | str | Path], threshold: float = 0.5) -> list[dict[str, Tensor]]:
        """Detections per image: ``scores`` (K,), ``labels`` (K,), ``boxes`` (K, 4) absolute xyxy, on the CPU."""
        pictures = [load_image(im) if isinstance(im, str | Path) else im for im in images]
        pixel_values = self.processor(pictures)["pixel_values"].to(self.device, self.dtype)
        outputs = self.model(pixel_values)
        sizes = torch.tensor([[p.height, p.width] for p in pictures], device=self.device)
        results = self.processor.post_process_object_detection(
            {"logits": outputs.logits.float(), "pred_boxes": outputs.pred_boxes.float()},
            threshold=threshold, target_sizes=sizes)
        return [{k: v.cpu() for k, v in r.items()} for r in results]


def predict_source(predictor: Predictor, source: str | Path, output_dir: str | Path, threshold: float = 0.5,
                   batch_size: int = 1, save_images: bool = True, progress: bool = True) -> Path:
    """Run ``predictor`` on an image, a folder or a glob; write annotated images and ``predictions.json``.

    ``predictions.json`` is a list in COCO results format (``image_id``, ``category_id``, ``bbox`` as
    ``[x, y, w, h]`` in pixels, ``score``) with ``category_name`` and ``file_name`` added; ``category_id`` is the
    model's label index. Returns the path of ``predictions.json``.
    """
    from tqdm import tqdm

    from dfine.hub.files import atomic_write_text
    from dfine.visualize import draw_detections

    files = list_images(source)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    names = predictor.class_names
    records: list[dict[str, Any]] = []
    batches = [files[i:i + batch_size] for i in range(0, len(files), max(1, batch_size))]
    bar = tqdm(total=len(files), desc="predict", unit="img", disable=not progress or len(files) < 2)
    used_names: set[str] = set()
    for batch in batches:
        pictures = [load_image(f) for f in batch]
        for path, picture, det in zip(batch, pictures, predictor.predict(pictures, threshold)):
            image_id = len(used_names)
            out_name = path.name if path.name not in used_names else f"{path.stem}_{image_id}{path.suffix}"
            used_names.add(out_name)
            for score, label, box in zip(det["scores"].tolist(), det["labels"].tolist(), det["boxes"].tolist()):
                x1, y1, x2, y2 = box
                records.append({"image_id": image_id, "file_name": str(path), "category_id": int(label),
                                "category_name": names[label] if label < len(names) else str(label),
                                "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                                "score": round(float(score), 5)})
            if save_images:
                annotated = draw_detections(picture, det["boxes"], det["labels"], det["scores"], names)
                target = output_dir / out_name
                if target.suffix.lower() not in (".jpg", ".jpeg", ".png", ".bmp", ".webp"):
                    target = target.with_suffix(".jpg")
                annotated.save(target)
            bar.update(1)
    bar.close()
    path = output_dir / "predictions.json"
    atomic_write_text(path, json.dumps(records, indent=1) + "\n")
    return path
