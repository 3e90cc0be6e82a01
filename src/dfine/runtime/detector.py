"""What every torch-free runtime of an exported model shares: reading pictures into the graph's input, the dfine
metadata, feeding a fixed-batch graph, and detections per image.

An exported dfine graph (:mod:`dfine.export.onnx`, and the OpenVINO IR made from it) takes ``images`` float32
(B, 3, H, W) in [0, 1] after a stretch resize and ``orig_target_sizes`` int64 (B, 2) as (width, height), and gives
``labels``, ``boxes`` (absolute x1, y1, x2, y2) and ``scores`` (a segmentation model's also ``masks``, each
instance's mask probabilities at 1/4 of the input size). :class:`ExportedDetector` does everything around
that; a runtime (:class:`dfine.runtime.onnx.OnnxDetector`, :class:`dfine.runtime.openvino.OpenVinoDetector`) loads
the file, hands over its metadata and input shape, and runs one batch.

Preprocessing is identical to :class:`dfine.DFineImageProcessor` for pictures and 8-bit data (the same PIL bilinear
stretch resize, the same float32 values of v/255), so detections equal those of the PyTorch model within the
export's tolerance. This module imports NumPy, Pillow and the torch-free :mod:`dfine.imaging` only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

from dfine.errors import InputFileError
from dfine.imaging.decode import to_rgb
from dfine.imaging.inputs import image_list, standardize_image
from dfine.runtime.masks import segment_image
from dfine.utils.checks import check_number

__all__ = ["EXTRA_OUTPUTS", "RESAMPLE_NAMES", "ExportedDetector", "ImageInput", "preprocess"]

#: outputs an export may have beyond labels, boxes and scores, in the order :meth:`ExportedDetector.run` gives them
EXTRA_OUTPUTS = ("masks",)

# uint8 -> float32 of v / 255, computed in float64 and rounded once: the processor's exact values
_RESCALE = (np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)

ImageInput = Union[str, "os.PathLike[str]", Image.Image, np.ndarray]

#: PIL's filter codes (a processor's ``resample``) by the name an export's ``resample`` metadata gives them
RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
_RESAMPLE = {name: Image.Resampling(code) for code, name in RESAMPLE_NAMES.items()}


def _size(picture: Image.Image | np.ndarray) -> tuple[int, int]:
    """(width, height) of a picture or an (H, W, 3) array."""
    return (picture.width, picture.height) if isinstance(picture, Image.Image) else (picture.shape[1],
                                                                                        picture.shape[0])


def preprocess(pictures: Sequence[Image.Image | np.ndarray], size: tuple[int, int],
               resample: str = "bilinear") -> np.ndarray:
    """RGB pictures -> float32 (B, 3, H, W): PIL stretch resize to ``size`` = (H, W) (bilinear unless the export
    says otherwise), then v / 255. Any normalisation of the model is inside the graph (dfine.export.preprocess).

    Float (H, W, 3) arrays in [0, 1] (from :func:`dfine.imaging.inputs.standardize_image`) are resized per channel
    as PIL "F" images, the processor's float path.
    """
    height, width = size
    flt = _RESAMPLE[resample]
    arrays = []
    for picture in pictures:
        if isinstance(picture, np.ndarray):
            array = picture
            if array.shape[:2] != (height, width):
                planes = [Image.fromarray(np.ascontiguousarray(array[:, :, c])) for c in range(3)]
                array = np.stack([np.asarray(p.resize((width, height), flt)) for p in planes], axis=-1)
            arrays.append(array.astype(np.float32, copy=False).transpose(2, 0, 1))
            continue
        resized = to_rgb(picture).resize((width, height), resample=flt)
        arrays.append(_RESCALE[np.asarray(resized)].transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(arrays))


class ExportedDetector:
    """An exported D-FINE model in some runtime, used like :class:`dfine.Predictor`.

    A subclass loads the file, then calls :meth:`_read_metadata` with the dfine metadata and the ``images`` input
    shape, and implements :meth:`_run_once` (one batch of the graph's own batch size, or any when dynamic).
    """

    path: Path
    batch: int | None  # the graph's fixed batch, None when dynamic
    image_size: tuple[int, int]  # (H, W) of the graph's input
    class_names: list[str]
    dataset_category_ids: list[int] | None
    precision: str  # what the export recorded: fp32, fp16, int8 ... (a runtime may say more)
    resample: str
    graph_outputs: list[str]  # labels, boxes, scores, then those of EXTRA_OUTPUTS the graph has
    predicts_masks: bool  # a segmentation model's export: its masks output gives each instance's mask

    def _read_metadata(self, meta: Mapping[str, str], shape: Sequence[Any], outputs: Iterable[str]) -> None:
        """Set the attributes above from the file's dfine metadata, the ``images`` input shape (ints for fixed
        dimensions, anything else for symbolic ones) and the graph's output names; one-line errors naming the file
        for what cannot be used."""
        names = set(outputs)
        self.graph_outputs = ["labels", "boxes", "scores", *(name for name in EXTRA_OUTPUTS if name in names)]
        self.predicts_masks = "masks" in names
        self.batch = shape[0] if shape and isinstance(shape[0], int) else None
        self.image_size = self._input_size(shape, meta)
        if meta.get("orig_target_sizes", "width,height") != "width,height":
            raise InputFileError(self.path, f"unsupported orig_target_sizes order {meta['orig_target_sizes']!r}")
        self.class_names = [str(name) for name in self._json_list(meta, "class_names") or []]
        ids = self._json_list(meta, "dataset_category_ids")
        if ids is not None and not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise InputFileError(self.path, "its dataset_category_ids metadata is not a list of integers")
        self.dataset_category_ids = ids
        self.precision = meta.get("precision", "fp32")
        self.resample = meta.get("resample", "bilinear")  # older exports: the processor default
        if self.resample not in _RESAMPLE:
            raise InputFileError(self.path, f"unknown resample filter {self.resample!r} in the metadata")

    def _json_list(self, meta: Mapping[str, str], key: str) -> list[Any] | None:
        """The JSON list stored under ``key``, None when absent; an edited or damaged value is a one-line error
        naming the file (predictions would otherwise fail later, with a traceback)."""
        text = meta.get(key)
        if not text:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if not isinstance(value, list):
            raise InputFileError(self.path, f"its {key} metadata is not a JSON list: {text[:60]!r}")
        return value

    def _input_size(self, shape: Sequence[Any], meta: Mapping[str, str]) -> tuple[int, int]:
        """(H, W) of the ``images`` input: the graph's, or its ``image_size`` metadata when the graph leaves them
        symbolic (a graph edited or exported by other tools: dfine's own exports fix them)."""
        if len(shape) == 4 and isinstance(shape[2], int) and isinstance(shape[3], int):
            return shape[2], shape[3]
        try:
            height, width = (int(v) for v in meta["image_size"].split(","))
        except (KeyError, ValueError):
            raise InputFileError(self.path, f"the images input height and width are not fixed ({list(shape)}) and "
                                            "no image_size metadata gives them: export with a fixed input size"
                                 ) from None
        return height, width

    def _run_once(self, images: np.ndarray, sizes_wh: np.ndarray) -> tuple[np.ndarray, ...]:
        """One call of the graph: its :attr:`graph_outputs` for a batch it accepts."""
        raise NotImplementedError

    def run(self, images: np.ndarray, sizes_wh: np.ndarray) -> tuple[np.ndarray, ...]:
        """The raw graph: images (B, 3, H, W) float32 and (width, height) int64 per image -> labels, boxes, scores
        (and the :attr:`graph_outputs` after them, e.g. a segmentation model's masks)."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        sizes_wh = np.ascontiguousarray(sizes_wh, dtype=np.int64)
        if self.batch is None or len(images) == self.batch:
            return self._run_once(images, sizes_wh)
        # a fixed-batch graph: feed it piece by piece, the last piece filled up with copies of its last image
        parts = []
        for start in range(0, len(images), self.batch):
            piece, piece_sizes = images[start:start + self.batch], sizes_wh[start:start + self.batch]
            count = len(piece)
            if count < self.batch:
                fill = self.batch - count
                piece = np.concatenate([piece, np.repeat(piece[-1:], fill, axis=0)])
                piece_sizes = np.concatenate([piece_sizes, np.repeat(piece_sizes[-1:], fill, axis=0)])
            parts.append([output[:count] for output in self._run_once(piece, piece_sizes)])
        return tuple(np.concatenate([p[k] for p in parts]) for k in range(len(parts[0])))

    def predict(self, images: ImageInput | Iterable[ImageInput], threshold: float = 0.5) -> list[dict[str, Any]]:
        """Detections per image: ``scores`` (K,), ``labels`` (K,), ``boxes`` (K, 4) absolute xyxy in pixels,
        ``names`` (K class names), sorted by score, keeping scores strictly above ``threshold`` (0 to 1).

        ``images``: a path, PIL image or NumPy array (uint8 (H, W, 3) RGB or (H, W) grey, float in [0, 1]), a list
        of them, or a 4-D array as a batch.

        A segmentation model's export (:attr:`predicts_masks`) also gives ``masks`` (K, H, W) bool at each image's
        size, after the post-processing of :meth:`dfine.DFineImageProcessor.post_process_instance_segmentation`
        (boxes clipped to the image, class-agnostic NMS at IoU 0.7, masks cut to their boxes;
        :mod:`dfine.runtime.masks`).
        """
        threshold = check_number(threshold, "threshold", low=0.0, high=1.0)
        # read as dfine.Predictor and the processor read them (dfine.imaging.inputs): the same pixels, the same size
        pictures = [standardize_image(im) for im in image_list(images)]
        sizes = np.array([_size(p) for p in pictures], dtype=np.int64)
        outputs = dict(zip(self.graph_outputs, self.run(preprocess(pictures, self.image_size, self.resample), sizes),
                           strict=True))
        labels, boxes, scores = outputs["labels"], outputs["boxes"], outputs["scores"]
        results = []
        for i in range(len(pictures)):
            keep = scores[i] > threshold
            instances = None
            if self.predicts_masks:  # NMS, then full-size masks
                instances = segment_image(boxes[i], scores[i], outputs["masks"][i], keep, sizes[i])
                keep = instances.index
            kept = labels[i][keep]
            result = {
                "scores": scores[i][keep], "labels": kept, "boxes": boxes[i][keep],
                "names": [self.class_names[k] if 0 <= k < len(self.class_names) else str(k) for k in kept.tolist()],
            }
            if instances is not None:
                result.update(boxes=instances.boxes, masks=instances.masks)
            results.append(result)
        return results

    def __repr__(self) -> str:
        batch = "dynamic" if self.batch is None else self.batch
        return (f"{type(self).__name__}({str(self.path)!r}, image_size={self.image_size}, batch={batch}, "
                f"precision={self.precision}, classes={len(self.class_names)})")
