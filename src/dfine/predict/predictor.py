"""High-level prediction: a model, its processor and a device, from file names to detections on disk.

``Predictor`` is what ``dfine predict`` runs; it is also the shortest way to use a model from Python::

    predictor = Predictor.from_pretrained("ustc-community/dfine-small-coco")
    detections = predictor.predict(["street.jpg"])  # list of {"scores", "labels", "boxes"} in pixels
    [street] = predictor.predict("street.jpg")      # one image in: still a list, of one result
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from dfine.config.image_size import validate_image_size
from dfine.config.presets import is_preset
from dfine.errors import ConfigError, DFineError
from dfine.export.formats import format_of
from dfine.imaging.inputs import image_list, standardize_image
from dfine.processing.processor import DFineImageProcessor
from dfine.utils.checks import check_flag, check_number, check_path, shown
from dfine.utils.device import check_device, resolve_device

logger = logging.getLogger("dfine")


def load_processor(model_source: str | Path, image_size: int | None = None) -> DFineImageProcessor:
    """The processor stored with a local model (in its folder, or beside its file), else the checkpoints'
    defaults, at the model's own input size (:func:`dfine.processing.input_size.model_input_size`); ``image_size``
    overrides."""
    from dfine.processing.input_size import model_input_size, processor_folder

    validate_image_size(image_size)
    folder = processor_folder(model_source)
    processor = DFineImageProcessor.from_pretrained(folder) if folder is not None else DFineImageProcessor()
    height, width = (image_size, image_size) if image_size is not None else model_input_size(model_source)
    processor.size = {"height": int(height), "width": int(width)}
    return processor


def random_weights_reason(model: str | Path) -> str | None:
    """Why ``from_pretrained(model)`` gives a model with random weights (a preset name, a config file without
    weights), or None when it loads weights.

    This follows :func:`dfine.model.resolve.resolve_checkpoint`'s order (an existing file or folder wins over a
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
                               half_head: Any, bf16: Any, decoder_layers: Any = None) -> None:
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
    if decoder_layers is not None and (not isinstance(decoder_layers, int) or isinstance(decoder_layers, bool)
                                       or decoder_layers < 1):
        raise ConfigError(f"decoder_layers (--decoder-layers) must be an integer >= 1, got {shown(decoder_layers)}")


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
                        half_head: bool = False, bf16: bool = False, decoder_layers: int | None = None) -> Predictor:
        """Load a model for inference.

        ``half`` (CUDA only), ``bf16`` (CPU or CUDA) and ``compile`` switch to
        :func:`dfine.model.deploy.fast.optimize_for_inference`: the deploy form with an fp16 or bf16
        backbone/encoder (the head stays fp32 unless ``half_head``) and/or ``torch.compile``; otherwise the model runs
        as loaded (numerically identical to transformers). ``half_head`` runs the head in that half precision too:
        faster, notably at large batches. ``dfine val --half`` (or ``--bf16``, with or without ``--half-head``) shows
        what a precision costs on your data.

        ``decoder_layers`` runs only the first K decoder layers (:mod:`dfine.model.depth`): faster, a little less
        accurate, no retraining.

        A preset name (or a config file) gives random weights: that works, for trying things out, but it is
        logged as a warning because its detections mean nothing.
        """
        from dfine.model.auto import checkpoint_model_class

        _check_predictor_arguments(model, device, half, image_size, compile, half_head, bf16, decoder_layers)
        exported = format_of(model)
        if exported is not None:
            runs = f"--backend {exported.backend}" if exported.predicts else "dfine benchmark"
            raise DFineError(f"{model}: {exported.kind} is not a PyTorch model: it runs with {runs} "
                             f"({exported.python_api} in Python)")
        device = resolve_device(device)
        if half and device.type != "cuda":  # before loading, which can take a while
            raise DFineError("--half needs a CUDA device (on the CPU use --bf16: bfloat16 is fast there, float16 is "
                             "not)")
        model_class = checkpoint_model_class(model)
        network = model_class.from_pretrained(model).to(device).eval()
        if decoder_layers is not None:
            network.set_decoder_layers(decoder_layers)  # before the deploy form below, which copies the depth
        reason = random_weights_reason(model)
        if reason is not None:
            logger.warning("%s: the model has random weights, so its detections are meaningless (pass trained "
                           "weights, e.g. ustc-community/dfine-small-coco)", reason)
        processor = load_processor(model, image_size)
        if half or bf16 or compile:
            from dfine.model.deploy.fast import optimize_for_inference

            size = (processor.size["height"], processor.size["width"])
            dtype = torch.float16 if half else torch.bfloat16 if bf16 else torch.float32
            network = optimize_for_inference(network, dtype=dtype, device=device, compile=compile, image_size=size,
                                             head_dtype=None if half_head else torch.float32, uncertainty=True)
        return cls(network, processor, device, torch.float32)

    @property
    def predicts_masks(self) -> bool:
        """Whether :meth:`predict` gives instance masks (a segmentation model, D-FINE-seg)."""
        return bool(getattr(self.model.config, "use_mask_head", False))  # the fast form keeps the config

    @property
    def class_names(self) -> list[str]:
        return self.model.config.class_names

    @property
    def dataset_category_ids(self) -> list[int] | None:
        """The training data set's category id of each label, when they were not 0..C-1 (else None)."""
        return self.model.config.dataset_category_ids

    @torch.inference_mode()
    def predict(self, images: ImageInput | Iterable[ImageInput], threshold: float = 0.5) -> list[dict[str, Tensor]]:
        """Detections per image: ``scores`` (K,), ``labels`` (K,), ``boxes`` (K, 4) absolute xyxy, on the CPU, and
        for a D-FINE model (not a model of another kind wrapped in a Predictor) ``edge_uncertainty`` (K, 4), the
        standard deviation of each box edge in pixels, and ``uncertainty`` (K,), one number per box
        (:mod:`dfine.ops.uncertainty`).

        ``images`` is one image or a sequence of them; an image is a path or http(s) URL, a PIL image, a numpy
        array ((H, W) or (H, W, C), as :class:`~dfine.processing.processor.DFineImageProcessor` reads it) or a torch
        tensor ((H, W) or (C, H, W)); a 4-D array or tensor is a batch. The result is always a list, one entry per
        image, so one image gives a list of one (as :meth:`dfine.runtime.onnx.OnnxDetector.predict`). Boxes are in the
        pixels of each image as given (a tensor's H and W), whatever size the model runs at.

        As in transformers' post-processing, boxes are not clipped and can reach past the image's borders
        (:func:`dfine.predict.files.predict_source` clips what it writes).

        A segmentation model (:attr:`predicts_masks`) also gives ``masks`` (K, H, W) bool at the image's size, and
        its instances go through D-FINE-seg's post-processing
        (:meth:`~dfine.processing.processor.DFineImageProcessor.post_process_instance_segmentation`: boxes clipped
        to the image, class-agnostic NMS at IoU 0.7, each mask cut to its box).

        Raises:
            DFineError: no images, an image that cannot be read (naming its type, shape or file), or a threshold
                outside [0, 1].
        """
        threshold = check_number(threshold, "threshold", low=0.0, high=1.0)
        # read as the processor reads them, so that boxes are scaled to the size it resized from; passing the
        # standardised images to the processor again leaves them as they are
        pictures = [standardize_image(im) for im in _image_list(images)]
        features = self.processor(pictures)
        pixel_values = features["pixel_values"].to(self.device, self.dtype)
        outputs = self._forward(pixel_values)
        sizes = torch.tensor([_height_width(p) for p in pictures])
        if "pixel_mask" in features:
            # a padding processor (do_pad) puts each picture in the top-left part of a larger input, and the boxes
            # are fractions of that whole input: scale them to the picture as if it filled the input
            mask = features["pixel_mask"].bool()
            filled = torch.stack([mask.any(2).sum(1), mask.any(1).sum(1)], dim=1).double()
            sizes = sizes.double() * torch.tensor(mask.shape[1:], dtype=torch.float64) / filled
        sizes = sizes.to(self.device)
        raw = {"logits": outputs.logits.float(), "pred_boxes": outputs.pred_boxes.float()}
        edges = getattr(outputs, "edge_uncertainty", None)
        if edges is not None:
            raw["edge_uncertainty"] = edges.float()
        masks = getattr(outputs, "pred_masks", None)
        if masks is None:
            results = self.processor.post_process_object_detection(raw, threshold=threshold, target_sizes=sizes,
                                                                    return_uncertainty=edges is not None)
            return [{k: v.cpu() for k, v in r.items()} for r in results]
        raw["pred_masks"] = masks
        # masks are made at the whole (padded) input's scaled size and then cut to the picture, which fills its
        # top-left part
        scaled = sizes.double().round().long()
        results = self.processor.post_process_instance_segmentation(raw, threshold=threshold, target_sizes=scaled,
                                                                    return_uncertainty=edges is not None)
        for result, picture in zip(results, pictures, strict=True):
            height, width = _height_width(picture)
            result["masks"] = result["masks"][:, :height, :width]
        return [{k: v.cpu() for k, v in r.items()} for r in results]

    def track(self, frames: Iterable[ImageInput], tracker: str = "bytetrack", threshold: float = 0.3,
              classes: str | Sequence[str | int] | None = None, frame_rate: float = 30.0, batch_size: int = 1,
              **options: Any) -> Iterator[dict[str, Tensor]]:
        """Detect and track objects over ``frames`` read by the caller (a camera, a stream, decoded video): for each
        frame in order, :meth:`predict`'s result plus ``track_ids`` (one per box; -1 for a box no track has taken
        yet; ids count from 1). See :mod:`dfine.predict.tracking`; needs ``pip install 'dfine[track]'``.

        Args:
            frames: an iterable of images (read lazily, ``batch_size`` at a time, so a live stream works).
            tracker: ``bytetrack``, ``ocsort``, ``botsort``, ``sort`` or ``cbiou``.
            threshold: detection score kept (0.3: the trackers use low scores to follow occluded objects).
            classes: keep only these classes (names or label indices, as ``dfine predict --classes``).
            frame_rate: the frames' rate, which sets how long a lost track is kept.
            batch_size: frames per forward pass.
            **options: the tracker's own options (e.g. ``lost_track_buffer=60``).

        Raises:
            DFineError: an unknown tracker, class or option, or the trackers package missing (at the call, before
                any frame is read).
        """
        from dfine.predict.files import class_indices
        from dfine.predict.tracking import track_frames

        threshold = check_number(threshold, "threshold", low=0.0, high=1.0)
        wanted = class_indices(classes, self.class_names) if classes is not None else None
        return track_frames(self, frames, tracker, threshold, wanted, frame_rate, batch_size, **options)

    def _forward(self, pixel_values: Tensor) -> Any:
        """The model's outputs, with the edges' spreads where the model can give them (the training form is asked
        for them; a fast form from :meth:`from_pretrained` was built to return them)."""
        from dfine.model.detection import DFineForObjectDetection

        if isinstance(self.model, DFineForObjectDetection):
            return self.model(pixel_values, output_uncertainty=True)
        return self.model(pixel_values)
