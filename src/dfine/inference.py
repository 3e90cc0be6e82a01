"""High-level prediction: a model, its processor and a device, from file names to detections on disk.

``Predictor`` is what ``dfine predict`` runs; it is also the shortest way to use a model from Python::

    predictor = Predictor.from_pretrained("ustc-community/dfine-small-coco")
    detections = predictor.predict(["street.jpg"])  # list of {"scores", "labels", "boxes"} in pixels
    [street] = predictor.predict("street.jpg")      # one image in: still a list, of one result
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from dfine.arguments import (
    check_device,
    check_flag,
    check_number,
    check_path,
    resolve_device,
    shown,
    validate_image_size,
)
from dfine.errors import ConfigError, DFineError, InputFileError
from dfine.image_input import image_list, standardize_image
from dfine.io import list_images, read_images
from dfine.presets import is_preset
from dfine.processor import DFineImageProcessor

logger = logging.getLogger("dfine")


def load_processor(model_source: str | Path, image_size: int | None = None) -> DFineImageProcessor:
    """The processor stored with a local model (in its folder, or beside its file), else the checkpoints'
    defaults, at the model's own input size (:func:`dfine.hub.resolve.model_input_size`); ``image_size``
    overrides."""
    from dfine.hub.resolve import model_input_size, processor_folder

    validate_image_size(image_size)
    folder = processor_folder(model_source)
    processor = DFineImageProcessor.from_pretrained(folder) if folder is not None else DFineImageProcessor()
    height, width = (image_size, image_size) if image_size is not None else model_input_size(model_source)
    processor.size = {"height": int(height), "width": int(width)}
    return processor


def random_weights_reason(model: str | Path) -> str | None:
    """Why ``from_pretrained(model)`` gives a model with random weights (a preset name, a config file without
    weights), or None when it loads weights.

    This follows :func:`dfine.hub.resolve.resolve_checkpoint`'s order (an existing file or folder wins over a
    preset of the same name), which builds such a model without saying so.
    """
    path = Path(model).expanduser()
    if path.is_file():
        return f"{model} is a config file without weights" if path.suffix == ".json" else None
    if not path.exists() and "/" not in str(model) and is_preset(str(model)):
        return f"{model} is a preset"
    return None


ImageInput = Image.Image | str | Path | np.ndarray | Tensor
"""One image as :meth:`Predictor.predict` takes it."""

_IMAGE_KINDS = "a path, PIL image, numpy array or torch tensor"


def _image_list(images: Any) -> list[Any]:
    """``images`` as a list of single images, read as the processor reads them (:func:`image_list`), and also from
    any other iterable (a generator); a path is one image, not a sequence of characters."""
    if not isinstance(images, str | os.PathLike | Image.Image | np.ndarray | Tensor | list | tuple):
        if not isinstance(images, Iterable) or isinstance(images, bytes | Mapping):
            raise DFineError(f"cannot read images from {shown(images)}: pass an image ({_IMAGE_KINDS}) or a list "
                             "of them")
        images = list(images)
    return image_list(images)


def _height_width(picture: Image.Image | np.ndarray) -> tuple[int, int]:
    if isinstance(picture, Image.Image):
        return picture.height, picture.width
    return int(picture.shape[0]), int(picture.shape[1])


def _check_predictor_arguments(model: Any, device: Any, half: Any, image_size: Any, compile: Any,
                               half_head: Any, bf16: Any) -> None:
    """Wrong types as one line naming the argument, before the model is loaded (which can be a download)."""
    if isinstance(model, torch.nn.Module):
        raise ConfigError(f"model must be a preset name, hub id, folder or file (a str or Path), got {shown(model)}: "
                          "wrap a model already in memory with Predictor(model.eval()) instead")
    check_path(model, "model", "a preset name, hub id, folder or file")
    check_device(device)
    check_flag(half, "half")
    check_flag(compile, "compile")
    check_flag(half_head, "half_head")
    check_flag(bf16, "bf16")
    if half and bf16:
        raise ConfigError("choose one of half (--half) and bf16 (--bf16)")
    if half_head and not (half or bf16):
        raise ConfigError("half_head (--half-head) runs the head in the body's half precision: it needs half (--half) "
                          "or bf16 (--bf16)")
    validate_image_size(image_size)


@dataclass
class Predictor:
    """A model ready for inference: eval mode, on ``device``, with its processor and class names."""

    model: torch.nn.Module
    processor: DFineImageProcessor = field(default_factory=DFineImageProcessor)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32

    @classmethod
    def from_pretrained(cls, model: str | Path, device: str | torch.device = "auto", half: bool = False,
                        image_size: int | None = None, compile: bool = False,
                        half_head: bool = False, bf16: bool = False) -> Predictor:
        """Load a model for inference.

        ``half`` (CUDA only), ``bf16`` (CPU or CUDA) and ``compile`` switch to
        :func:`dfine.export.fast.optimize_for_inference`: the deploy form with an fp16 or bf16 backbone/encoder (the
        head stays fp32 unless ``half_head``) and/or ``torch.compile``; otherwise the model runs as loaded
        (numerically identical to transformers). ``half_head`` runs the head in that half precision too: faster,
        notably at large batches. ``dfine val --half`` (or ``--bf16``, with or without ``--half-head``) shows what
        a precision costs on your data.

        A preset name (or a config file) gives random weights: that works, for trying things out, but it is
        logged as a warning because its detections mean nothing.
        """
        from dfine.model import DFineForObjectDetection

        _check_predictor_arguments(model, device, half, image_size, compile, half_head, bf16)
        if Path(model).suffix.lower() == ".onnx":
            raise DFineError(f"{model}: an exported ONNX model runs with --backend onnxruntime "
                             "(dfine.runtime.OnnxDetector in Python)")
        device = resolve_device(device)
        if half and device.type != "cuda":  # before loading, which can take a while
            raise DFineError("--half needs a CUDA device (on the CPU use --bf16: bfloat16 is fast there, float16 is "
                             "not)")
        network = DFineForObjectDetection.from_pretrained(model).to(device).eval()
        reason = random_weights_reason(model)
        if reason is not None:
            logger.warning("%s: the model has random weights, so its detections are meaningless (pass trained "
                           "weights, e.g. ustc-community/dfine-small-coco)", reason)
        processor = load_processor(model, image_size)
        if half or bf16 or compile:
            from dfine.export.fast import optimize_for_inference

            size = (processor.size["height"], processor.size["width"])
            dtype = torch.float16 if half else torch.bfloat16 if bf16 else torch.float32
            network = optimize_for_inference(network, dtype=dtype, device=device, compile=compile, image_size=size,
                                             head_dtype=None if half_head else torch.float32)
        return cls(network, processor, device, torch.float32)

    @property
    def class_names(self) -> list[str]:
        return self.model.config.class_names

    @property
    def dataset_category_ids(self) -> list[int] | None:
        """The training data set's category id of each label, when they were not 0..C-1 (else None)."""
        return self.model.config.dataset_category_ids

    @torch.inference_mode()
    def predict(self, images: ImageInput | Iterable[ImageInput], threshold: float = 0.5) -> list[dict[str, Tensor]]:
        """Detections per image: ``scores`` (K,), ``labels`` (K,), ``boxes`` (K, 4) absolute xyxy, on the CPU.

        ``images`` is one image or a sequence of them; an image is a path, a PIL image, a numpy array ((H, W) or
        (H, W, C), as :class:`~dfine.processor.DFineImageProcessor` reads it) or a torch tensor ((H, W) or
        (C, H, W)); a 4-D array or tensor is a batch. The result is always a list, one entry per image, so one
        image gives a list of one (as :meth:`dfine.runtime.OnnxDetector.predict`). Boxes are in the pixels of
        each image as given (a tensor's H and W), whatever size the model runs at.

        As in transformers' post-processing, boxes are not clipped and can reach past the image's borders
        (:func:`predict_source` clips what it writes).

        Raises:
            DFineError: no images, an image that cannot be read (naming its type, shape or file), or a threshold
                outside [0, 1].
        """
        threshold = check_number(threshold, "threshold", low=0.0, high=1.0)
        # read as the processor reads them, so that boxes are scaled to the size it resized from; passing the
        # standardised images to the processor again leaves them as they are
        pictures = [standardize_image(im) for im in _image_list(images)]
        pixel_values = self.processor(pictures)["pixel_values"].to(self.device, self.dtype)
        outputs = self.model(pixel_values)
        sizes = torch.tensor([_height_width(p) for p in pictures], device=self.device)
        results = self.processor.post_process_object_detection(
            {"logits": outputs.logits.float(), "pred_boxes": outputs.pred_boxes.float()},
            threshold=threshold, target_sizes=sizes)
        return [{k: v.cpu() for k, v in r.items()} for r in results]


class Detector(Protocol):
    """What :func:`predict_source` needs: :class:`Predictor` and :class:`dfine.runtime.OnnxDetector` both fit."""

    @property
    def class_names(self) -> list[str]: ...

    def predict(self, images: list[Any], threshold: float = 0.5) -> list[dict[str, Any]]: ...


#: Annotated pictures keep the input's extension when it is one of these; other formats are written as JPEG.
PICTURE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


@dataclass
class PredictionRun:
    """What :func:`predict_source` did."""

    predictions: Path  #: the predictions.json written
    images: int  #: images predicted
    detections: int  #: records in predictions.json
    pictures: list[Path] = field(default_factory=list)  #: annotated images written, in input order
    skipped: list[InputFileError] = field(default_factory=list)  #: unreadable files, each naming path and problem


def prepare_output_dir(output_dir: str | Path) -> Path:
    """Create ``output_dir`` (and its parents) if needed; a DFineError when it cannot be a folder."""
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise InputFileError(path, "exists and is not a folder: choose another output folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a parent is a file
        raise InputFileError(path, "cannot be created: part of the path is a file, not a folder") from None
    except PermissionError:
        raise InputFileError(path, "cannot be created: permission denied") from None
    return path


def picture_name(source: Path, used: set[str]) -> str:
    """The file name of ``source``'s annotated picture, unique within one run.

    The input's name when its extension is in :data:`PICTURE_SUFFIXES`, else the name plus ``.jpg`` (``x.tif`` ->
    ``x.tif.jpg``, so it cannot meet ``x.jpg``); a name already in ``used`` (compared case-insensitively, as
    macOS and Windows file systems do) gets ``_1``, ``_2``, ... before the extension. The name is added to
    ``used``.
    """
    name = source.name if source.suffix.lower() in PICTURE_SUFFIXES else f"{source.name}.jpg"
    stem, suffix = name[: -len(Path(name).suffix)], Path(name).suffix
    candidate, number = name, 0
    while candidate.casefold() in used:
        number += 1
        candidate = f"{stem}_{number}{suffix}"
    used.add(candidate.casefold())
    return candidate


def _clip_boxes(boxes: Any, width: int, height: int) -> np.ndarray:
    """(K, 4) xyxy boxes clipped to the image, as float64 (the model's boxes can run past the borders)."""
    array = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    array[:, 0::2] = array[:, 0::2].clip(0, width)
    array[:, 1::2] = array[:, 1::2].clip(0, height)
    return array


def predict_source(predictor: Detector, source: str | Path, output_dir: str | Path, threshold: float = 0.5,
                   batch_size: int = 1, save_images: bool = True, progress: bool = True) -> PredictionRun:
    """Run ``predictor`` on an image, a folder or a glob; write annotated images and ``predictions.json``.

    ``predictions.json`` is a list with one record per detection: ``file_name`` (the input path),
    ``image_id`` (the image's 0-based position among the images predicted in this run, in the sorted order of
    the source), ``category_id`` (the model's 0-based label index), ``dataset_category_id`` (only for a model
    trained by dfine on a data set whose category ids were not 0..C-1: the id the class had there, e.g. in the
    COCO file), ``category_name``, ``bbox`` (``[x, y, width, height]`` in pixels of the original image, clipped
    to it) and ``score``. The layout is that of a COCO results file, but the image ids are this run's, so match
    records to a data set by ``file_name``.

    Annotated pictures are named by :func:`picture_name` and show the same clipped boxes.

    When the source is several files (a folder or a glob), a file that cannot be read is skipped with a warning
    naming it and listed in the result's ``skipped``; a single named file that cannot be read, or a source none
    of whose files can, raises.

    Raises:
        InputFileError: the source names no images, a single image cannot be read, or ``output_dir`` cannot be
            a folder.
        DFineError: no image of the source could be read.
    """
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from dfine.hub.files import atomic_write_text
    from dfine.visualize import draw_detections

    files = list_images(source)
    output_dir = prepare_output_dir(output_dir)
    names = predictor.class_names
    dataset_ids = getattr(predictor, "dataset_category_ids", None)
    records: list[dict[str, Any]] = []
    run = PredictionRun(output_dir / "predictions.json", 0, 0)
    used_names: set[str] = set()

    def predict_batch(batch: Sequence[tuple[Path, Image.Image]]) -> None:
        pictures = [picture for _, picture in batch]
        for (path, picture), det in zip(batch, predictor.predict(pictures, threshold), strict=True):
            boxes = _clip_boxes(det["boxes"], picture.width, picture.height)
            labels = np.asarray(det["labels"]).reshape(-1).tolist()
            scores = np.asarray(det["scores"]).reshape(-1).tolist()
            for score, label, (x1, y1, x2, y2) in zip(scores, labels, boxes.tolist(), strict=True):
                label = int(label)
                record = {"image_id": run.images, "file_name": str(path), "category_id": label}
                if dataset_ids is not None and 0 <= label < len(dataset_ids):
                    record["dataset_category_id"] = dataset_ids[label]
                records.append({**record, "category_name": names[label] if 0 <= label < len(names) else str(label),
                                "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                                "score": round(float(score), 5)})
            if save_images:
                target = output_dir / picture_name(path, used_names)
                draw_detections(picture, boxes, labels, scores, names).save(target)
                run.pictures.append(target)
            run.images += 1

    show_bar = progress and len(files) > 1
    # While the bar is shown, warnings go through tqdm so they do not break its line; otherwise logging is left
    # alone (logging_redirect_tqdm would add a console handler even where the caller configured none).
    redirect = logging_redirect_tqdm() if show_bar else contextlib.nullcontext()
    with redirect, tqdm(total=len(files), desc="predict", unit="img", disable=not show_bar) as bar:
        pending: list[tuple[Path, Image.Image]] = []
        for path, image in read_images(files):
            if isinstance(image, InputFileError):
                if len(files) == 1:
                    raise image
                logger.warning("skipped %s", image)
                run.skipped.append(image)
                bar.update(1)
                continue
            pending.append((path, image))
            if len(pending) >= batch_size:
                predict_batch(pending)
                bar.update(len(pending))
                pending = []
        if pending:
            predict_batch(pending)
            bar.update(len(pending))
    if run.images == 0:
        raise DFineError(f"{source}: none of its {len(files)} images could be read (first: {run.skipped[0]})")
    run.detections = len(records)
    atomic_write_text(run.predictions, json.dumps(records, indent=1) + "\n")
    return run
