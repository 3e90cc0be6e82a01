"""``BatchFeature``: the processor's output, a dict of model inputs read by key or attribute, as in transformers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = ["BatchFeature"]


class BatchFeature(dict):
    """A dict of model inputs whose keys can also be read as attributes (``batch.pixel_values``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, *args: Any, **kwargs: Any) -> BatchFeature:
        """Move every tensor like ``Tensor.to``; a dtype only applies to floating tensors.

        Nested values (the ``labels`` list of per-image dicts) are moved to the device but keep their dtype, so
        ``batch.to(device, torch.float16)`` leaves the boxes that the loss reads in float32.

        Returns:
            A new BatchFeature (tensors moved, other values shared).
        """
        dtype = kwargs.pop("dtype", None)
        device = kwargs.pop("device", None)
        for arg in args:
            if isinstance(arg, torch.dtype):
                dtype = arg
            else:
                device = arg
        moved = BatchFeature()
        for key, value in self.items():
            if isinstance(value, Tensor):
                value = value.to(device=device, dtype=dtype if value.is_floating_point() else None, **kwargs)
            elif isinstance(value, (list, tuple)):
                value = type(value)(_to_device(item, device, kwargs) for item in value)
            moved[key] = value
        return moved


def _to_device(value: Any, device: Any, kwargs: dict[str, Any]) -> Any:
    """Tensors inside (lists of) dicts moved to ``device``; everything else returned as is."""
    if isinstance(value, Tensor):
        return value.to(device=device, **kwargs)
    if isinstance(value, Mapping):
        return type(value)({key: _to_device(item, device, kwargs) for key, item in value.items()})
    return value
