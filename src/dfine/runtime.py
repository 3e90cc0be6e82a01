"""Inference without PyTorch: an exported ``.onnx`` model in ONNX Runtime, with NumPy and Pillow only.

::

    from dfine.runtime import OnnxDetector

    detector = OnnxDetector("dfine-s.onnx")
    for det in detector.predict(["street.jpg"], threshold=0.5):
        print(det["labels"], det["names"], det["scores"], det["boxes"])  # boxes: absolute x1, y1, x2, y2

Preprocessing is identical to :class:`dfine.DFineImageProcessor` for pictures and 8-bit data (the same PIL bilinear
stretch resize, the same float32 values of v/255), so detections equal those of the PyTorch model within the
export's tolerance. The graph's ``orig_target_sizes`` input is (width, height) per image, as in the original D-FINE
tools (see :mod:`dfine.export.postprocess`); this module builds it from the pictures.

This module must stay importable without PyTorch (``import dfine`` is lazy; :mod:`dfine.io` is torch-free).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dfine.errors import DFineError, InputFileError, first_line
from dfine.io import load_image, to_rgb

__all__ = ["OnnxDetector", "create_session", "preprocess"]

# uint8 -> float32 of v / 255, computed in float64 and rounded once: the processor's exact values
_RESCALE = (np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)


def preprocess(pictures: Sequence[Image.Image], size: tuple[int, int]) -> np.ndarray:
    """RGB pictures -> float32 (B, 3, H, W): PIL bilinear stretch resize to ``size`` = (H, W), then v / 255."""
    height, width = size
    arrays = []
    for picture in pictures:
        resized = to_rgb(picture).resize((width, height), resample=Image.Resampling.BILINEAR)
        arrays.append(_RESCALE[np.asarray(resized)].transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(arrays))


def create_session(path: str | Path, providers: Sequence[str] | None = None, threads: int | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` with full graph optimisation.

    Args:
        path: the ``.onnx`` file.
        providers: execution providers in order of preference (default: CUDA if available, then CPU).
        threads: intra-op threads (default: ONNX Runtime's choice, one per physical core).
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise DFineError("onnxruntime is not installed: pip install onnxruntime (or onnxruntime-gpu)") from None
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "no such ONNX file")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # no warnings about initialisers or unused providers
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    available = ort.get_available_providers()
    if providers is None:
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
    except Exception as error:  # invalid protobuf, unsupported op, ...
        raise InputFileError(path, f"cannot be loaded by ONNX Runtime ({first_line(error)})") from None


class OnnxDetector:
    """An exported D-FINE model in ONNX Runtime, used like :class:`dfine.Predictor`.

    Args:
        path: the ``.onnx`` file written by ``dfine export --format onnx``.
        providers: ONNX Runtime execution providers (default: CUDA if available, then CPU).
        threads: intra-op threads (default: ONNX Runtime's choice).
    """

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None, threads: int | None = None) -> None:
        self.path = Path(path)
        self.session = create_session(self.path, providers, threads)
        inputs = {i.name: i for i in self.session.get_inputs()}
        if set(inputs) != {"images", "orig_target_sizes"}:
            raise InputFileError(self.path, f"not a dfine export: inputs are {sorted(inputs)}, expected images and "
                                            "orig_target_sizes")
        meta = self.session.get_modelmeta().custom_metadata_map
        shape = inputs["images"].shape
        self.batch: int | None = shape[0] if isinstance(shape[0], int) else None
        self.image_size: tuple[int, int] = (int(shape[2]), int(shape[3]))
        if meta.get("orig_target_sizes", "width,height") != "width,height":
            raise InputFileError(self.path, f"unsupported orig_target_sizes order {meta['orig_target_sizes']!r}")
        names = meta.get("class_names")
        self.class_names: list[str] = json.loads(names) if names else []
        ids = meta.get("dataset_category_ids")
        self.dataset_category_ids: list[int] | None = json.loads(ids) if ids else None
        self.precision = meta.get("precision", "fp32")

    def run(self, images: np.ndarray, sizes_wh: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The raw graph: images (B, 3, H, W) float32 and (width, height) int64 per image -> labels, boxes, scores."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        sizes_wh = np.ascontiguousarray(sizes_wh, dtype=np.int64)
        if self.batch is None or len(images) == self.batch:
            return self._run_session(images, sizes_wh)
        # a fixed-batch graph: feed it piece by piece, the last piece filled up with copies of its last image
        parts = []
        for start in range(0, len(images), self.batch):
            piece, piece_sizes = images[start:start + self.batch], sizes_wh[start:start + self.batch]
            count = len(piece)
            if count < self.batch:
                fill = self.batch - count
                piece = np.concatenate([piece, np.repeat(piece[-1:], fill, axis=0)])
                piece_sizes = np.concatenate([piece_sizes, np.repeat(piece_sizes[-1:], fill, axis=0)])
            parts.append([output[:count] for output in self._run_session(piece, piece_sizes)])
        return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))  # type: ignore[return-value]

    def _run_session(self, images: np.ndarray, sizes_wh: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        labels, boxes, scores = self.session.run(["labels", "boxes", "scores"],
                                                 {"images": images, "orig_target_sizes": sizes_wh})
        return labels, boxes, scores

    def predict(self, images: Sequence[Image.Image | str | Path] | Image.Image | str | Path,
                threshold: float = 0.5) -> list[dict[str, Any]]:
        """Detections per image: ``scores`` (K,), ``labels`` (K,), ``boxes`` (K, 4) absolute xyxy in pixels,
        ``names`` (K class names), sorted by score, keeping scores strictly above ``threshold``."""
        items = [images] if isinstance(images, Image.Image | str | Path) else list(images)
        if not items:
            raise DFineError("no images given")
        pictures = [load_image(im) if isinstance(im, str | Path) else to_rgb(im) for im in items]
        sizes = np.array([[p.width, p.height] for p in pictures], dtype=np.int64)
        labels, boxes, scores = self.run(preprocess(pictures, self.image_size), sizes)
        results = []
        for i in range(len(pictures)):
            keep = scores[i] > threshold
            kept = labels[i][keep]
            results.append({
                "scores": scores[i][keep], "labels": kept, "boxes": boxes[i][keep],
                "names": [self.class_names[k] if 0 <= k < len(self.class_names) else str(k) for k in kept.tolist()],
            })
        return results

    def __repr__(self) -> str:
        batch = "dynamic" if self.batch is None else self.batch
        return (f"OnnxDetector({str(self.path)!r}, image_size={self.image_size}, batch={batch}, "
                f"precision={self.precision}, classes={len(self.class_names)})")
