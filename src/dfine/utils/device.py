"""Choosing the device to run on: ``"auto"``, ``cpu``, ``cuda``, ``cuda:N`` (and ``mps`` / ``xpu`` where PyTorch has
them), with a one-line :class:`~dfine.errors.DFineError` for a device this machine does not have.
"""

from __future__ import annotations

from typing import Any

import torch

from dfine.errors import ConfigError, DFineError
from dfine.utils.checks import shown

# Device types a model can run real images on; torch.device also parses "meta", "ipu", ... which would only fail
# later with a confusing message.
_DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


_DEVICE_HINT = "use auto, cpu, cuda or cuda:N"


def check_device(device: Any, name: str = "device") -> None:
    """A ConfigError unless ``device`` is a string or a ``torch.device`` (its value is checked by
    :func:`resolve_device`)."""
    if not isinstance(device, str | torch.device):
        raise ConfigError(f"{name} must be 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device, got {shown(device)}")


def _device_available(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_available()
    if device.type == "mps":
        return torch.backends.mps.is_available()
    if device.type == "xpu":
        return hasattr(torch, "xpu") and torch.xpu.is_available()
    return True


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The device to run on: ``"auto"`` picks CUDA when available, else the CPU; otherwise ``cpu``, ``cuda``,
    ``cuda:N`` (and ``mps``/``xpu`` where PyTorch has them), case-insensitive.

    Raises:
        DFineError: an unknown device string, or a device this machine does not have.
    """
    if isinstance(device, torch.device):
        parsed = device
    else:
        text = str(device).strip().lower()
        if text == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            parsed = torch.device(text)
        except RuntimeError:  # torch's message lists twenty device types most of which cannot run this model
            raise DFineError(f"unknown device {str(device)!r}: {_DEVICE_HINT}") from None
    if parsed.type not in _DEVICE_TYPES:
        raise DFineError(f"unknown device {str(device)!r}: {_DEVICE_HINT}")
    if not _device_available(parsed):
        kind = "CUDA" if parsed.type == "cuda" else parsed.type.upper()
        raise DFineError(f"device {str(parsed)!r} was asked for, but no {kind} device is available")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise DFineError(f"device {str(parsed)!r} was asked for, but this machine has {count} CUDA device(s): "
                         f"cuda:0 to cuda:{count - 1}")
    return parsed
