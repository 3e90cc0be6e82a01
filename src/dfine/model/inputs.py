"""Checks of the model's ``forward`` arguments: a mistake is a one-line error naming the argument and the expected
form, instead of a failure deep inside a convolution or the loss.

They look at Python types and tensor shapes only, never at values: no host-device synchronisation, so the inference
forward stays capturable in a CUDA graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from dfine.errors import ModelInputError, ModelInputTypeError, UnsupportedFeatureError

__all__ = ["LABELS_FORMAT", "check_feature_maps", "check_flags", "check_labels", "check_pixel_values",
           "encoder_output_parts"]

#: What ``labels`` must look like; every labels error ends with it.
LABELS_FORMAT = ('labels must be a list with one dict per image, each with "class_labels" (N,) int64 and "boxes" '
                 '(N, 4) normalised cxcywh float tensors')


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__.split('.')[0]}.{kind.__name__}"


def check_pixel_values(pixel_values: Any, stride: int, device: torch.device) -> None:
    if not isinstance(pixel_values, Tensor):
        hint = " (torch.from_numpy(...), or the processor with return_tensors='pt')" if hasattr(
            pixel_values, "__array__") else ""
        raise ModelInputTypeError(f"pixel_values must be a torch.Tensor of shape (B, 3, H, W); got "
                                  f"{_type_name(pixel_values)}{hint}")
    if pixel_values.dim() != 4 or pixel_values.shape[1] != 3:
        raise ModelInputError(f"pixel_values must have shape (B, 3, H, W); got {tuple(pixel_values.shape)}")
    if not pixel_values.is_floating_point():
        raise ModelInputTypeError(f"pixel_values must be a float tensor with values in [0, 1]; got "
                                  f"{pixel_values.dtype} (use the processor, or .float() / 255)")
    height, width = pixel_values.shape[-2:]
    if height % stride or width % stride:
        raise ModelInputError(f"pixel_values height and width must be multiples of {stride}; got {height}x{width} "
                              "(the processor resizes to the model's size)")
    if pixel_values.device != device:
        raise ModelInputError(f"pixel_values is on {pixel_values.device} but the model is on {device}; "
                              "move the inputs with .to(model.device)")


def check_feature_maps(maps: Any, name: str, levels: int, channels: int) -> list[Tensor]:
    """``inputs_embeds`` / ``encoder_outputs`` maps: ``levels`` tensors (B, channels, H_l, W_l), finest first."""
    if (not isinstance(maps, (list, tuple)) or len(maps) != levels
            or not all(isinstance(m, Tensor) and m.dim() == 4 and m.shape[1] == channels for m in maps)):
        got = ([tuple(m.shape) if isinstance(m, Tensor) else _type_name(m) for m in maps]
               if isinstance(maps, (list, tuple)) else _type_name(maps))
        raise ModelInputError(f"{name} must be a list of {levels} feature maps (B, {channels}, H_l, W_l), finest "
                              f"first; got {got}")
    return list(maps)


def encoder_output_parts(encoder_outputs: Any) -> tuple[Any, Any]:
    """(last_hidden_state, hidden_states) of a transformers ``BaseModelOutput`` or its tuple form."""
    if isinstance(encoder_outputs, Mapping):
        return encoder_outputs.get("last_hidden_state"), encoder_outputs.get("hidden_states")
    if hasattr(encoder_outputs, "last_hidden_state"):
        return encoder_outputs.last_hidden_state, getattr(encoder_outputs, "hidden_states", None)
    if isinstance(encoder_outputs, (list, tuple)) and encoder_outputs:
        return encoder_outputs[0], encoder_outputs[1] if len(encoder_outputs) > 1 else None
    return encoder_outputs, None


def _check_target(target: Any, where: str) -> None:
    if not isinstance(target, Mapping):
        raise ModelInputTypeError(f"{where} is a {_type_name(target)}, not a dict; {LABELS_FORMAT}")
    missing = [key for key in ("class_labels", "boxes") if key not in target]
    if missing:
        hint = ' (rename "labels" to "class_labels")' if "class_labels" in missing and "labels" in target else ""
        raise ModelInputError(f'{where} has no {" or ".join(repr(k) for k in missing)} key{hint}; {LABELS_FORMAT}')
    classes, boxes = target["class_labels"], target["boxes"]
    for key, value in (("class_labels", classes), ("boxes", boxes)):
        if not isinstance(value, Tensor):
            raise ModelInputTypeError(f'{where}["{key}"] is a {_type_name(value)}, not a tensor; {LABELS_FORMAT}')
    if classes.is_floating_point() or classes.is_complex() or classes.dtype == torch.bool:
        raise ModelInputTypeError(f'{where}["class_labels"] is {classes.dtype}; {LABELS_FORMAT}')
    if not boxes.is_floating_point():
        raise ModelInputTypeError(f'{where}["boxes"] is {boxes.dtype}; {LABELS_FORMAT}')
    if classes.dim() != 1 or boxes.dim() != 2 or boxes.shape[1] != 4 or boxes.shape[0] != classes.shape[0]:
        raise ModelInputError(f'{where} has "class_labels" of shape {tuple(classes.shape)} and "boxes" of shape '
                              f"{tuple(boxes.shape)}; {LABELS_FORMAT}")
    masks = target.get("masks")
    if masks is not None and (not isinstance(masks, Tensor) or masks.dim() != 3 or masks.shape[0] != classes.shape[0]):
        shape = tuple(masks.shape) if isinstance(masks, Tensor) else _type_name(masks)
        raise ModelInputError(f'{where} has {classes.shape[0]} boxes but "masks" of shape {shape}: instance masks are '
                              "one (H, W) tensor per box, (N, H, W), at the input image's size")


def check_labels(labels: Any, batch_size: int) -> None:
    if isinstance(labels, Mapping):
        raise ModelInputTypeError(f"labels is one dict for a batch of {batch_size} images; {LABELS_FORMAT}")
    if not isinstance(labels, (list, tuple)):
        raise ModelInputTypeError(f"labels is a {_type_name(labels)}; {LABELS_FORMAT}")
    if len(labels) != batch_size:
        raise ModelInputError(f"labels has {len(labels)} dicts for a batch of {batch_size} images; {LABELS_FORMAT}")
    for index, target in enumerate(labels):
        _check_target(target, f"labels[{index}]")


def check_flags(output_attentions: Any, output_hidden_states: Any, return_dict: Any) -> None:
    for name, value in (("output_attentions", output_attentions), ("output_hidden_states", output_hidden_states),
                        ("return_dict", return_dict)):
        if value is not None and not isinstance(value, bool):
            raise ModelInputTypeError(f"{name} must be True, False or None; got {value!r}")
    if output_attentions:
        # Our attention kernels (SDPA, fused deformable sampling) never materialise per-head weights.
        raise UnsupportedFeatureError("output_attentions=True is not supported: dfine's attention kernels do not "
                                      "return attention weights")
