"""What counts as an image: one input (path, PIL image, array, tensor) read into the form the processor resizes.

The input rules are those documented in :mod:`dfine.processing.processor`; :class:`dfine.predict.predictor.Predictor`
and the torch-free runtime (:mod:`dfine.runtime.onnx`) read their inputs with the same functions, so the size they
scale boxes to is the one the processor resized from, and the same input gives the same pixels to each.

PyTorch is never imported here: a tensor can only exist once its caller has imported torch, so :func:`is_tensor`
looks the class up among the modules already loaded.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from PIL import Image

from dfine.errors import DFineError
from dfine.imaging.decode import load_image, to_rgb

__all__ = ["check_channel_format", "image_list", "is_tensor", "standardize_image", "tensor_to_numpy"]


def is_tensor(value: Any) -> bool:
    """Whether ``value`` is a ``torch.Tensor``, without importing PyTorch (absent or blocked, nothing is one)."""
    torch = sys.modules.get("torch")
    tensor_class = getattr(torch, "Tensor", None)
    return tensor_class is not None and isinstance(value, tensor_class)


def tensor_to_numpy(tensor: Any) -> np.ndarray:
    """A tensor's values on the CPU as a numpy array; floating types as float32 (numpy has no bfloat16)."""
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point():
        tensor = tensor.float()
    return tensor.numpy()

_CHANNEL_FORMATS = ("channels_first", "channels_last")


def check_channel_format(input_data_format: Any) -> str | None:
    """``None``, ``"channels_first"`` or ``"channels_last"`` (transformers' ``ChannelDimension`` values too)."""
    value = getattr(input_data_format, "value", input_data_format)
    if value is not None and value not in _CHANNEL_FORMATS:
        raise ValueError(f"input_data_format must be 'channels_first' or 'channels_last', got {input_data_format!r}")
    return value


def _channel_axis(shape: tuple[int, ...], from_tensor: bool, input_data_format: str | None) -> int | None:
    """Axis (0 or 2) of a 3-D image that holds its channels, or ``None`` when no axis can."""
    if input_data_format is not None:
        axis = 0 if input_data_format == "channels_first" else 2
        return axis if shape[axis] in (1, 3, 4) else None
    if from_tensor:
        # transformers' infer_channel_dimension_format: first axis if it has 1 or 3 entries, else the last.
        # RGBA (4) is our extension, tried after those so that it never overrides transformers' choice.
        candidates = ((0, (1, 3)), (2, (1, 3)), (0, (4,)), (2, (4,)))
    else:
        candidates = ((2, (1, 3, 4)), (0, (1, 3, 4)))  # numpy images are HWC by convention (PIL, OpenCV)
    return next((axis for axis, counts in candidates if shape[axis] in counts), None)


def _array_to_hwc(array: np.ndarray, from_tensor: bool = False, input_data_format: str | None = None) -> np.ndarray:
    """(H, W), (H, W, C) or (C, H, W) with C in {1, 3, 4} -> (H, W, 3), same dtype.

    Errors show the shape the user gave (``array`` is never permuted before this point).
    """
    axis = _channel_axis(array.shape, from_tensor, input_data_format) if array.ndim == 3 else None
    # an empty array has no pixels: resized, it would become a blank image with detections of nothing
    if array.ndim == 2 and 0 not in array.shape:
        array = array[:, :, None]
    elif axis is not None and 0 not in array.shape:
        array = np.moveaxis(array, axis, -1)
    else:
        kind = "tensor" if from_tensor else "array"
        layout = f" with input_data_format={input_data_format!r}" if input_data_format and array.ndim == 3 else ""
        raise DFineError(
            f"cannot read an image {kind} of shape {tuple(array.shape)}{layout}: expected (H, W), (H, W, C) or "
            "(C, H, W) with C in 1, 3, 4"
        )
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return array[:, :, :3]  # alpha dropped, as for PIL input


def standardize_image(image: Any, input_data_format: str | None = None) -> Image.Image | np.ndarray:
    """One input image -> an RGB PIL image (integer data) or a float32 (H, W, 3) array in [0, 1]."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)  # a path, or a URL string
    if isinstance(image, Image.Image):
        if 0 in image.size:  # as for an empty array: nothing to detect in, and resizing would invent pixels
            raise DFineError(f"cannot read an image of {image.width}x{image.height} pixels: it is empty")
        return to_rgb(image)
    from_tensor = is_tensor(image)
    if from_tensor:
        image = tensor_to_numpy(image)
    if not isinstance(image, np.ndarray):
        raise DFineError(f"cannot read an image of type {type(image).__name__}: use PIL, numpy, torch or a path")
    array = _array_to_hwc(image, from_tensor, input_data_format)
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise DFineError("float images must hold values in [0, 1], got NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if low < -1e-3 or high > 1 + 1e-3:
            raise DFineError(
                f"float images must hold values in [0, 1] (got {low:.3g}..{high:.3g}); pass uint8 data for 0-255 "
                "values"
            )
        return array
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise DFineError(f"cannot read an image array of dtype {array.dtype}")
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise DFineError(f"integer images must hold values in 0..255, got {array.min()}..{array.max()}")
        array = array.astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array))  # (H, W, 3) uint8 -> RGB


def image_list(images: Any) -> list[Any]:
    """``images`` as a list of single images: a list or tuple as it is, a 4-D array or tensor split into its
    images, a path, picture, array or tensor as one image, any other iterable (a generator) as the images it
    yields; an empty input is an error.

    A dict or bytes is not taken for the list of its keys or bytes: it is one (unreadable) image, which
    :func:`standardize_image` names.
    """
    batch = (isinstance(images, np.ndarray) or is_tensor(images)) and images.ndim == 4
    if isinstance(images, (list, tuple)) or batch:
        items = list(images)
    elif isinstance(images, (str, os.PathLike, Image.Image, np.ndarray, bytes, Mapping)) or is_tensor(images):
        items = [images]
    elif isinstance(images, Iterable):
        items = list(images)
    else:
        items = [images]
    if not items:
        raise DFineError("no images given")
    return items
