"""Image processor: turns pictures into ``pixel_values`` and raw model outputs into detections.

The defaults are those of the released checkpoints' ``preprocessor_config.json``: stretch-resize to 640×640 with
PIL bilinear (no aspect ratio kept, no padding), multiply by 1/255, no mean/std normalisation. For PIL input the
result is bit-identical to ``PIL.Image.resize((W, H), BILINEAR)`` divided by 255, which is what the checkpoints
were validated with.

Input rules (one image, or a list/tuple of them, or a 4-D batch tensor/array):

* ``PIL.Image`` of any mode: converted to RGB by :func:`dfine.imaging.decode.to_rgb` (alpha dropped, not composited).
* ``str`` / ``Path``: read with :func:`dfine.imaging.decode.load_image` (a ``str`` may be an http(s) URL).
* ``numpy`` arrays: ``(H, W)``, ``(H, W, C)`` (preferred) or ``(C, H, W)`` with C in {1, 3, 4}, RGB(A) order.
* ``torch`` tensors: ``(H, W)``, ``(C, H, W)`` (preferred) or ``(H, W, C)``; ``(B, ...)`` is split into B images.
  The channel axis is inferred as transformers does (first if it has 1 or 3 entries, else last; then 4 = RGBA);
  ``input_data_format="channels_first"`` / ``"channels_last"`` overrides the inference for arrays and tensors.
* **dtype rule** (arrays and tensors): integer types hold 0–255 values and go through PIL exactly like a PIL image
  (so they give the same numbers); floating types hold values already in [0, 1]: they are not rescaled, and are
  resized by the same PIL filter run in 32-bit float mode (``"F"``), i.e. identical maths without the 8-bit
  rounding of the integer path (differences to the integer path stay below 1/255).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from dfine.errors import ConfigError, DFineError, InputFileError
from dfine.hub.download import download_from_hub
from dfine.imaging.inputs import check_channel_format, image_list, standardize_image
from dfine.ops.boxes import box_cxcywh_to_xyxy
from dfine.processing.annotations import check_annotations, coco_to_target, normalize_target, pad_target, resize_target
from dfine.processing.batch_feature import BatchFeature
from dfine.processing.detections import output_edge_uncertainty, softmax_detections, split_uncertainty, top_k_detections
from dfine.processing.options import (
    ANNOTATION_FORMATS,
    HUB_ID,
    OPTION_NAMES,
    check_option_names,
    converted_option,
    flag_option,
    parse_size,
)

PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"


IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


def _target_to_feature(target: Mapping[str, np.ndarray], return_tensors: str | None) -> BatchFeature:
    """numpy target -> BatchFeature of numpy arrays (``"np"``) or tensors (``"pt"``/``None``), dtypes kept."""
    if return_tensors == "np":
        return BatchFeature(target)
    return BatchFeature({key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in target.items()})


class DFineImageProcessor:
    """Preprocessing and post-processing for D-FINE, configured like the hub's ``preprocessor_config.json``.

    Args:
        do_resize: stretch every image to ``size`` (aspect ratio not kept).
        size: output ``{"height": H, "width": W}`` (also ``(H, W)`` or an int for a square).
        resample: PIL filter code (0 nearest, 2 bilinear, 3 bicubic, 1 lanczos, 4 box, 5 hamming).
        do_rescale: multiply integer (0–255) inputs by ``rescale_factor``; float inputs are already in [0, 1].
        rescale_factor: usually 1/255.
        do_normalize: subtract ``image_mean`` and divide by ``image_std`` after rescaling (off for D-FINE).
        image_mean: per-channel mean (ImageNet by default, unused unless ``do_normalize``).
        image_std: per-channel std (ImageNet by default, unused unless ``do_normalize``).
        do_pad: pad every image at the bottom and right with zeros to ``pad_size`` (default: the largest image of
            the batch) and return ``pixel_mask`` (1 = image, 0 = padding), as transformers does.
        pad_size: fixed padded ``{"height": H, "width": W}``; needs ``do_pad``.
        do_convert_annotations: turn annotation boxes into (cx, cy, w, h) fractions of the (padded) image.
        format: annotation format; only ``"coco_detection"`` annotations can be processed.
    """

    def __init__(
        self,
        do_resize: bool = True,
        size: Mapping[str, int] | Sequence[int] | int | None = None,
        resample: int = 2,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = False,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        do_pad: bool = False,
        pad_size: Mapping[str, int] | Sequence[int] | int | None = None,
        do_convert_annotations: bool = True,
        format: str = "coco_detection",
    ) -> None:
        self.do_resize = flag_option(do_resize, "do_resize")
        self.size = parse_size(size if size is not None else {"height": 640, "width": 640})
        self.resample = converted_option(int, resample, "resample", "a PIL filter code 0..5")
        if self.resample not in (0, 1, 2, 3, 4, 5):
            raise ConfigError(f"resample must be a PIL filter code 0..5, got {resample!r}")
        self.do_rescale = flag_option(do_rescale, "do_rescale")
        self.rescale_factor = converted_option(float, rescale_factor, "rescale_factor", "a number")
        if not math.isfinite(self.rescale_factor) or self.rescale_factor <= 0:
            raise ConfigError(f"rescale_factor must be a positive number (1/255 for 8-bit images), got "
                              f"{rescale_factor!r}")
        self.do_normalize = flag_option(do_normalize, "do_normalize")
        self.image_mean = converted_option(lambda v: [float(x) for x in v], image_mean if image_mean is not None
                                     else IMAGENET_MEAN, "image_mean", "three numbers")
        self.image_std = converted_option(lambda v: [float(x) for x in v], image_std if image_std is not None
                                    else IMAGENET_STD, "image_std", "three numbers")
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0 or not all(
                math.isfinite(v) for v in (*self.image_mean, *self.image_std)):
            raise ConfigError("image_mean and image_std need three values each, with std > 0")
        self.do_pad = flag_option(do_pad, "do_pad")
        self.pad_size = parse_size(pad_size, "pad_size") if pad_size is not None else None
        self.do_convert_annotations = flag_option(do_convert_annotations, "do_convert_annotations")
        self.format = str(getattr(format, "value", format))  # transformers' AnnotationFormat enum, or a string
        if self.format not in ANNOTATION_FORMATS:
            raise ConfigError(f"format must be one of {', '.join(ANNOTATION_FORMATS)}, got {format!r}")

    # ----------------------------------------------------------------------------------------- preprocessing
    def __call__(
        self,
        images: Any,
        annotations: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        return_tensors: str | None = "pt",
        input_data_format: str | None = None,
        **options: Any,
    ) -> BatchFeature:
        """Turn one image or a batch (and optionally its COCO annotations) into model inputs.

        See the module docstring for accepted images. Annotations follow transformers' RT-DETR processors
        (:mod:`dfine.processing.annotations` describes each step), so the ``labels`` fine-tuning recipes read are the
        same.

        Args:
            images: an image, a list/tuple of images, or a 4-D batch tensor (B, C, H, W) / array (B, H, W, C).
            annotations: COCO detection annotations, one dict per image: ``{"image_id": int, "annotations":
                [{"bbox": [x, y, w, h], "category_id": int, "area": float, "iscrowd": 0}, ...]}``.
            return_tensors: ``"pt"`` (default; ``None`` means the same) or ``"np"``.
            input_data_format: ``"channels_first"`` or ``"channels_last"`` for array/tensor images whose channel
                axis cannot be inferred (e.g. shape (3, 100, 3)); inferred when ``None``.
            **options: per-call overrides of the constructor options (e.g. ``size={"height": 512, "width": 512}``).

        Returns:
            ``BatchFeature`` with ``pixel_values``: float32 (B, 3, H, W); with ``do_pad``, ``pixel_mask``: int64
            (B, H, W); with annotations, ``labels``: one dict per image (``class_labels``, ``boxes``, ``area``,
            ``iscrowd``, ``orig_size``, ``image_id``, and ``size`` once resized or padded).

        Raises:
            DFineError: an image or annotation cannot be read, images of different sizes are given with
                ``do_resize=False`` and no ``do_pad``, or an image is larger than ``pad_size``.
        """
        if options:
            unknown = set(options) - set(OPTION_NAMES)
            if unknown:
                raise TypeError(f"unknown processor option(s): {', '.join(sorted(unknown))}")
            merged = self.__class__(**{**self.to_dict(keep_only_options=True), **options})
            return merged(images, annotations, return_tensors, input_data_format)
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}")
        channel_format = check_channel_format(input_data_format)
        items = image_list(images)
        targets = self._check_annotations(annotations, len(items))
        pixels, labels = [], []
        for index, image in enumerate(items):
            standard = standardize_image(image, channel_format)
            array_size = standard.shape[:2] if isinstance(standard, np.ndarray) else standard.size[::-1]
            pixels.append(self._to_pixels(standard))
            if targets is not None:
                labels.append(self._prepare_target(targets[index], tuple(array_size), tuple(pixels[-1].shape[1:])))
        features = self._pad(pixels, labels) if self.do_pad else self._stack(pixels)
        if targets is not None:
            features["labels"] = [_target_to_feature(target, return_tensors) for target in labels]
        if return_tensors == "np":
            for key in ("pixel_values", "pixel_mask"):
                if key in features:
                    features[key] = features[key].numpy()
        return features

    preprocess = __call__

    def _check_annotations(self, annotations: Any, num_images: int) -> list[Mapping[str, Any]] | None:
        if annotations is None:
            return None
        if self.format != "coco_detection":
            raise DFineError(
                f"format={self.format!r} annotations are not supported: D-FINE detects boxes, pass "
                "'coco_detection' annotations"
            )
        return check_annotations(annotations, num_images)

    def _prepare_target(
        self, annotation: Mapping[str, Any], orig_size: tuple[int, int], size: tuple[int, int]
    ) -> dict[str, np.ndarray]:
        """COCO annotation -> target for the processed (not yet padded) image of ``size``."""
        target = coco_to_target(annotation, orig_size)
        if self.do_resize:
            # transformers rescales even when the size does not change (ratios of 1), which only sets "size".
            target = resize_target(target, orig_size, size)
        if self.do_convert_annotations:
            target = normalize_target(target, size)
        return target

    @staticmethod
    def _stack(pixels: list[Tensor]) -> BatchFeature:
        if len({tuple(p.shape) for p in pixels}) > 1:
            raise DFineError(
                "images of different sizes cannot be batched with do_resize=False: pass do_pad=True to pad them "
                "to the largest"
            )
        return BatchFeature(pixel_values=torch.stack(pixels))

    def _pad(self, pixels: list[Tensor], targets: list[dict[str, np.ndarray]]) -> BatchFeature:
        """Zero-pad every image at the bottom/right to a common size; ``targets`` (if any) updated in place."""
        if self.pad_size is not None:
            padded = (self.pad_size["height"], self.pad_size["width"])
        else:
            padded = (max(p.shape[1] for p in pixels), max(p.shape[2] for p in pixels))
        batch = torch.zeros((len(pixels), 3, *padded), dtype=torch.float32)
        mask = torch.zeros((len(pixels), *padded), dtype=torch.int64)
        for index, image in enumerate(pixels):
            height, width = image.shape[1:]
            if height > padded[0] or width > padded[1]:
                raise DFineError(
                    f"image {index} is {height}x{width} (after any resize), larger than pad_size "
                    f"{padded[0]}x{padded[1]}: raise pad_size or resize to a smaller size"
                )
            batch[index, :, :height, :width] = image
            mask[index, :height, :width] = 1
            if targets and (height, width) != padded:  # transformers leaves unpadded images' targets alone
                targets[index] = pad_target(targets[index], (height, width), padded, self.do_convert_annotations)
        return BatchFeature(pixel_values=batch, pixel_mask=mask)

    def _to_pixels(self, standard: Image.Image | np.ndarray) -> Tensor:
        """One standardised image -> float32 (3, H, W)."""
        height, width = self.size["height"], self.size["width"]
        if isinstance(standard, Image.Image):
            if self.do_resize:
                standard = standard.resize((width, height), resample=self.resample)
            array = np.asarray(standard)
            if self.do_rescale:
                # A 256-entry table computed in float64 and rounded once gives the correctly rounded
                # float32 of value * factor, i.e. exactly what numpy's uint8 -> float32 / 255 gives.
                table = (np.arange(256, dtype=np.float64) * self.rescale_factor).astype(np.float32)
                array = table[array]
            else:
                array = array.astype(np.float32)
        else:
            array = standard
            if self.do_resize and array.shape[:2] != (height, width):
                # 2-D float32 arrays become PIL "F" images: the same filter as the uint8 path, in float.
                planes = [Image.fromarray(np.ascontiguousarray(array[:, :, c])) for c in range(3)]
                channels = [np.asarray(plane.resize((width, height), self.resample)) for plane in planes]
                array = np.stack(channels, axis=-1)
        pixels = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous()
        if self.do_normalize:
            mean = torch.tensor(self.image_mean, dtype=torch.float32)[:, None, None]
            std = torch.tensor(self.image_std, dtype=torch.float32)[:, None, None]
            pixels = (pixels - mean) / std
        return pixels

    # ------------------------------------------------------------------------------------- post-processing
    def post_process_object_detection(
        self,
        outputs: Any,
        threshold: float = 0.5,
        target_sizes: Tensor | Sequence[Sequence[int]] | np.ndarray | None = None,
        use_focal_loss: bool = True,
        top_k: int | None = None,
        return_uncertainty: bool = False,
    ) -> list[dict[str, Tensor]]:
        """Raw outputs -> per-image detections, as Hugging Face's RT-DETR/D-FINE post-processing (no NMS).

        With ``use_focal_loss`` (D-FINE's training loss, the default), scores are ``sigmoid(logits)`` and the best
        ``top_k`` (query, class) pairs of each image are kept, so one query can appear with several classes, best
        first. Without it, the last logit is "no object": scores are ``softmax(logits)`` over the classes, that
        column dropped, and each query keeps its best class, in query order (best ``top_k`` queries, best first,
        when ``top_k`` is given). Boxes are not clipped to the image.

        Args:
            outputs: object with ``.logits`` (B, Q, C) and ``.pred_boxes`` (B, Q, 4) normalised (cx, cy, w, h), or a
                dict with those keys.
            threshold: keep detections whose score is strictly greater.
            target_sizes: (height, width) per image, as a list of pairs or a (B, 2) tensor/array; boxes are then in
                pixels of those sizes. ``None`` leaves them normalised to [0, 1].
            use_focal_loss: sigmoid scores over (query, class) pairs; ``False``: softmax with a "no object" class.
            top_k: candidates per image before thresholding (default Q, like the checkpoints' post-processor).
            return_uncertainty: also ``edge_uncertainty`` (N, 4), the σ of each edge in the boxes' units, and
                ``uncertainty`` (N,), one number per box (:mod:`dfine.ops.uncertainty`); the outputs must have
                ``edge_uncertainty`` (``model(..., output_uncertainty=True)``).

        Returns:
            One dict per image: ``scores`` (N,), ``labels`` (N,) int64, ``boxes`` (N, 4) absolute (x1, y1, x2, y2),
            sorted by descending score (in query order with ``use_focal_loss=False`` and no ``top_k``).

        Raises:
            ValueError: ``top_k`` is not a positive integer, ``target_sizes`` does not match the batch, or softmax
                scores are asked for logits without a "no object" column.
        """
        if top_k is not None and (not isinstance(top_k, numbers.Integral) or isinstance(top_k, bool) or top_k <= 0):
            raise ValueError(f"top_k must be a positive integer (candidates per image) or None, got {top_k!r}")
        if isinstance(outputs, Mapping):
            logits, pred_boxes = outputs["logits"], outputs["pred_boxes"]
        else:
            logits, pred_boxes = outputs.logits, outputs.pred_boxes
        batch, num_queries, num_classes = logits.shape
        boxes = box_cxcywh_to_xyxy(pred_boxes)
        if return_uncertainty:  # the edges' σ ride along as 4 more box columns, so they are selected and scaled alike
            boxes = torch.cat([boxes, output_edge_uncertainty(outputs, logits.shape).to(boxes)], dim=-1)
        if target_sizes is not None:
            sizes = torch.as_tensor(np.asarray(target_sizes) if not isinstance(target_sizes, Tensor) else target_sizes)
            if sizes.ndim != 2 or sizes.shape != (batch, 2):
                raise ValueError(f"target_sizes must hold one (height, width) per image: {batch} expected")
            heights, widths = sizes.to(device=boxes.device, dtype=boxes.dtype).unbind(1)
            boxes = boxes * torch.stack([widths, heights] * (boxes.shape[-1] // 2), dim=1)[:, None, :]

        if use_focal_loss:
            k = min(num_queries if top_k is None else int(top_k), num_queries * num_classes)
            scores, labels, boxes = top_k_detections(logits, boxes, k)
        else:
            scores, labels, boxes = softmax_detections(logits, boxes, top_k)

        keep = scores > threshold
        results = [
            {"scores": scores[i][keep[i]], "labels": labels[i][keep[i]], "boxes": boxes[i][keep[i]]}
            for i in range(batch)
        ]
        return [split_uncertainty(r) for r in results] if return_uncertainty else results

    def post_process_instance_segmentation(
        self, outputs: Any, threshold: float = 0.5, target_sizes: Tensor | Sequence[Sequence[int]] | None = None,
        mask_threshold: float = 0.5, nms_threshold: float | None = 0.7, top_k: int | None = None,
        return_uncertainty: bool = False,
    ) -> list[dict[str, Tensor]]:
        """Outputs of ``DFineForInstanceSegmentation`` -> per-image ``scores``, ``labels``, ``boxes`` and ``masks``
        (K, H, W) bool, as D-FINE-seg's inference; see :func:`dfine.processing.segmentation.post_process_instances`."""
        from dfine.processing.segmentation import post_process_instances

        return post_process_instances(outputs, threshold, target_sizes, mask_threshold, nms_threshold, top_k,
                                      return_uncertainty)

    # -------------------------------------------------------------------------------------------- config I/O
    def to_dict(self, keep_only_options: bool = False) -> dict[str, Any]:
        """The options as a ``preprocessor_config.json`` dict (transformers' RTDetrImageProcessor layout)."""
        options = {name: getattr(self, name) for name in OPTION_NAMES}
        options["size"] = dict(self.size)
        options["pad_size"] = dict(self.pad_size) if self.pad_size is not None else None
        if keep_only_options:
            return options
        # transformers users loading our files get an RT-DETR processor with the same behaviour.
        return {**options, "image_processor_type": "RTDetrImageProcessor"}

    def save_pretrained(self, save_directory: str | Path, *, push_to_hub: bool = False, **hub_options: Any) -> Path:
        """Write ``preprocessor_config.json`` into ``save_directory`` (created if needed); with ``push_to_hub=True``
        also upload it (:meth:`push_to_hub`; ``repo_id`` defaults to the folder's name).

        Returns:
            The path of the written file.
        """
        directory = Path(save_directory)
        if push_to_hub:
            written = self.save_pretrained(directory)
            self.push_to_hub(hub_options.pop("repo_id", directory.name), **hub_options)
            return written
        if hub_options:
            raise TypeError(f"save_pretrained() got unexpected keyword(s): {', '.join(sorted(hub_options))} (hub "
                            "options go with push_to_hub=True)")
        from dfine.utils.files import atomic_write_text

        # atomic, like the model's files: a run killed while saving must not leave a half-written config that
        # makes the folder unloadable
        return atomic_write_text(directory / PREPROCESSOR_CONFIG_NAME,
                                 json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    def push_to_hub(self, repo_id: str, *, commit_message: str | None = None, private: bool | None = None,
                    token: str | bool | None = None, revision: str | None = None, create_pr: bool = False) -> str:
        """Upload ``preprocessor_config.json`` to the hub repository ``repo_id`` (created when missing); returns the
        commit's URL.

        Raises:
            DFineError: the hub refused the upload or could not be reached (one line with its reason).
        """
        from dfine.hub.upload import push_files

        return push_files(self.save_pretrained, repo_id, commit_message=commit_message or "Upload image processor",
                          private=private, token=token, revision=revision, create_pr=create_pr)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], **overrides: Any) -> DFineImageProcessor:
        """Build from a ``preprocessor_config.json`` dict; keys we do not use are ignored."""
        check_option_names(overrides)
        options = {name: config[name] for name in OPTION_NAMES if name in config}
        return cls(**{**options, **overrides})

    @classmethod
    def from_pretrained(
        cls,
        pretrained: str | Path,
        *,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        **overrides: Any,
    ) -> DFineImageProcessor:
        """Load a processor from a folder, a ``preprocessor_config.json`` path or a hub id.

        Args:
            pretrained: local folder holding ``preprocessor_config.json``, the json file itself, a model file
                beside one (a run's ``last.pt``), or a hub repository id such as
                ``"ustc-community/dfine-small-coco"`` (downloaded into the Hugging Face cache).
            revision, cache_dir, local_files_only, token: passed to ``huggingface_hub.hf_hub_download``.
            **overrides: options replacing the file's values.

        Raises:
            InputFileError: a local path is missing or holds invalid JSON.
            CheckpointError: the hub file cannot be obtained (offline and not cached, unknown repository, no such
                file), in one line (:func:`dfine.hub.download.download_from_hub`).
        """
        check_option_names(overrides)  # a typo in the call, before the file (which is not to blame) is read
        path = Path(pretrained).expanduser()
        text = str(pretrained)
        if path.is_dir():
            path = path / PREPROCESSOR_CONFIG_NAME
            if not path.is_file():
                raise InputFileError(pretrained, f"folder has no {PREPROCESSOR_CONFIG_NAME}")
        elif not path.is_file():
            if not HUB_ID.match(text) or text.endswith(".json"):
                raise InputFileError(pretrained, "no such file or folder")
            path = download_from_hub(text, PREPROCESSOR_CONFIG_NAME, revision, cache_dir=cache_dir,
                                     local_files_only=local_files_only, token=token)
        elif path.suffix.lower() != ".json":
            # a model file (last.pt, model.safetensors, a .pth) given as the model's from_pretrained takes it: the
            # processor is the one saved beside it
            beside = path.parent / PREPROCESSOR_CONFIG_NAME
            if not beside.is_file():
                raise InputFileError(pretrained, f"is a model file, and its folder has no {PREPROCESSOR_CONFIG_NAME}")
            path = beside
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputFileError(path, f"not a readable JSON file ({error})") from error
        if not isinstance(config, dict):
            raise InputFileError(path, "expected a JSON object")
        try:
            return cls.from_dict(config, **overrides)
        except ConfigError as error:
            try:
                cls.from_dict(config)
            except ConfigError:  # the file's own value is wrong (not an override): name the file
                raise InputFileError(path, str(error)) from None
            raise

    def __repr__(self) -> str:
        options = ", ".join(f"{name}={getattr(self, name)!r}" for name in OPTION_NAMES)
        return f"{self.__class__.__name__}({options})"
