"""Inference without PyTorch: an exported ``.onnx`` model in ONNX Runtime, with NumPy and Pillow only.

::

    from dfine.runtime.onnx import OnnxDetector

    detector = OnnxDetector("dfine-s.onnx")
    for det in detector.predict(["street.jpg"], threshold=0.5):
        print(det["labels"], det["names"], det["scores"], det["boxes"])  # boxes: absolute x1, y1, x2, y2

Preprocessing is identical to :class:`dfine.DFineImageProcessor` for pictures and 8-bit data (the same PIL bilinear
stretch resize, the same float32 values of v/255), so detections equal those of the PyTorch model within the
export's tolerance. The graph's ``orig_target_sizes`` input is (width, height) per image, as in the original D-FINE
tools (see :mod:`dfine.export.postprocess`); this module builds it from the pictures.

This module must stay importable without PyTorch (``import dfine`` is lazy; :mod:`dfine.imaging` and
:mod:`dfine.utils.checks` are torch-free): it reads pictures, arrays and paths with :mod:`dfine.imaging.inputs`, the
functions :class:`dfine.Predictor` uses.
"""

from __future__ import annotations

import json
import numbers
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

from dfine.errors import ConfigError, DFineError, InputFileError, first_line
from dfine.imaging.decode import to_rgb
from dfine.imaging.inputs import image_list, standardize_image
from dfine.utils.checks import check_number

__all__ = ["OnnxDetector", "create_session", "preprocess", "providers_for_device"]

# uint8 -> float32 of v / 255, computed in float64 and rounded once: the processor's exact values
_RESCALE = (np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)

ImageInput = Union[str, "os.PathLike[str]", Image.Image, np.ndarray]


def _size(picture: Image.Image | np.ndarray) -> tuple[int, int]:
    """(width, height) of a picture or an (H, W, 3) array."""
    return (picture.width, picture.height) if isinstance(picture, Image.Image) else (picture.shape[1],
                                                                                        picture.shape[0])


#: PIL's filter codes (a processor's ``resample``) by the name an export's ``resample`` metadata gives them
RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
_RESAMPLE = {name: Image.Resampling(code) for code, name in RESAMPLE_NAMES.items()}


def preprocess(pictures: Sequence[Image.Image | np.ndarray], size: tuple[int, int],
               resample: str = "bilinear") -> np.ndarray:
    """RGB pictures -> float32 (B, 3, H, W): PIL stretch resize to ``size`` = (H, W) (bilinear unless the export
    says otherwise), then v / 255. Any normalisation of the model is inside the graph (dfine.export.preprocess).

    Float (H, W, 3) arrays in [0, 1] (from :func:`dfine.imaging.inputs.standardize_image`) are resized per channel as PIL "F" images, the
    processor's float path.
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


def providers_for_device(device: str) -> list[Any] | None:
    """The ONNX Runtime execution providers ``--device`` asks for: None (CUDA when there, else the CPU) for auto.

    ONNX Runtime itself falls back to the CPU without a word when a provider it is given is not installed, so a
    ``--device cuda`` that cannot be honoured is refused here instead of running elsewhere.
    """
    text = str(device).strip().lower()
    if text == "auto":
        return None
    if text == "cpu":
        return ["CPUExecutionProvider"]
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise DFineError(f"unknown device {device!r} for the onnxruntime backend: use auto, cpu, cuda or cuda:N")
    try:
        import onnxruntime as ort
    except ImportError:  # OnnxDetector says how to install it
        return None
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise DFineError(f"--device {device} was asked for, but ONNX Runtime has no CUDAExecutionProvider here "
                         "(pip install onnxruntime-gpu, or leave --device out)")
    return [("CUDAExecutionProvider", {"device_id": int(match[1] or 0)}), "CPUExecutionProvider"]


def check_onnx_file(path: Path) -> None:
    """Raise a one-line InputFileError when ``path`` cannot be an ONNX model: missing, a folder, or empty (ONNX
    Runtime reports an empty file as "No graph was found in the protobuf", and onnx.load reads it as a model
    without a graph)."""
    if path.is_dir():
        raise InputFileError(path, "is a folder, not an .onnx file")
    if not path.is_file():
        raise InputFileError(path, "no such ONNX file")
    if path.stat().st_size == 0:
        raise InputFileError(path, "empty file, not an ONNX model")


def _known_providers(providers: Sequence[Any] | str, known: Sequence[str], available: Sequence[str]) -> list[Any]:
    """``providers`` (names, or (name, options) pairs) as a list; a ConfigError for a name ONNX Runtime does not
    know (misspelt) or a list none of which is available here. ONNX Runtime would fall back to the CPU with only a
    banner on stderr, running elsewhere than asked; a plain string would be read as a list of its letters. A list
    with some unavailable entries (CUDA, then CPU) is the usual portable choice and stays allowed."""
    listed = [providers] if isinstance(providers, str) else list(providers)
    names = [provider[0] if isinstance(provider, tuple | list) else provider for provider in listed]
    unknown = next((name for name in names if name not in known), None)
    if unknown is not None:
        raise ConfigError(f"{unknown!r} is not an ONNX Runtime execution provider (available here: "
                          f"{', '.join(available)})")
    if names and not any(name in available for name in names):
        raise ConfigError(f"none of the execution providers {', '.join(names)} is available in this ONNX Runtime "
                          f"(available: {', '.join(available)})")
    return listed


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
    check_onnx_file(path)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # no warnings about initialisers or unused providers
    if threads is not None and (not isinstance(threads, numbers.Integral) or isinstance(threads, bool)
                                or threads < 0):
        raise ConfigError(f"threads must be an integer >= 1 (0 or None: ONNX Runtime's choice), got {threads!r}")
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    available = ort.get_available_providers()
    if providers is None:
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    providers = _known_providers(providers, ort.get_all_providers(), available)
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
        self.output_names = [o.name for o in self.session.get_outputs()]
        #: a segmentation model's export: its ``masks`` output gives each instance's mask (dfine.runtime.masks)
        self.predicts_masks = "masks" in self.output_names
        shape = inputs["images"].shape
        self.batch: int | None = shape[0] if isinstance(shape[0], int) else None
        self.image_size: tuple[int, int] = self._input_size(shape, meta)
        if meta.get("orig_target_sizes", "width,height") != "width,height":
            raise InputFileError(self.path, f"unsupported orig_target_sizes order {meta['orig_target_sizes']!r}")
        self.class_names: list[str] = [str(name) for name in self._json_list(meta, "class_names") or []]
        ids = self._json_list(meta, "dataset_category_ids")
        if ids is not None and not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise InputFileError(self.path, "its dataset_category_ids metadata is not a list of integers")
        self.dataset_category_ids: list[int] | None = ids
        self.precision = meta.get("precision", "fp32")
        self.resample = meta.get("resample", "bilinear")  # older exports: the processor default
        if self.resample not in _RESAMPLE:
            raise InputFileError(self.path, f"unknown resample filter {self.resample!r} in the metadata")

    def _json_list(self, meta: dict[str, str], key: str) -> list[Any] | None:
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

    def _input_size(self, shape: Sequence[Any], meta: dict[str, str]) -> tuple[int, int]:
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

    def run(self, images: np.ndarray, sizes_wh: np.ndarray) -> tuple[np.ndarray, ...]:
        """The raw graph: images (B, 3, H, W) float32 and (width, height) int64 per image -> labels, boxes, scores
        (and a segmentation model's masks)."""
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
        return tuple(np.concatenate([p[k] for p in parts]) for k in range(len(parts[0])))

    def _run_session(self, images: np.ndarray, sizes_wh: np.ndarray) -> tuple[np.ndarray, ...]:
        names = ["labels", "boxes", "scores", *(["masks"] if self.predicts_masks else [])]
        return tuple(self.session.run(names, {"images": images, "orig_target_sizes": sizes_wh}))

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
        labels, boxes, scores, *masks = self.run(preprocess(pictures, self.image_size, self.resample), sizes)
        results = []
        for i in range(len(pictures)):
            keep = scores[i] > threshold
            instances = None
            if masks:  # a segmentation model's export: NMS, then full-size masks
                from dfine.runtime.masks import segment_image

                instances = segment_image(boxes[i], scores[i], masks[0][i], keep, sizes[i])
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
        return (f"OnnxDetector({str(self.path)!r}, image_size={self.image_size}, batch={batch}, "
                f"precision={self.precision}, classes={len(self.class_names)})")
