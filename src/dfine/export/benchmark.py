"""Measuring a model: latency (median, p90), throughput, parameters, FLOPs and peak GPU memory.

FLOPs follow the paper's convention: ``torch.utils.flop_counter.FlopCounterMode`` counts 2 FLOPs per
multiply-accumulate, and on the deploy form at 640×640 it gives N 7.1 / S 25.1 / M 56.5 / L 90.9 / X 202.3
GFLOPs — the paper's 7 / 25 / 57 / 91 / 202. So the paper's "GFLOPs" are FLOPs (2 × MACs), not MACs.

Timing uses CUDA events on a GPU (after warm-up, with the GPU synchronised around each timed call) and
``time.perf_counter`` on the CPU. Every function takes a callable, so PyTorch, ONNX Runtime and TensorRT are timed
the same way.
"""

from __future__ import annotations

import copy
import statistics
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["Timing", "count_flops", "count_parameters", "peak_memory_mib", "time_callable"]


@dataclass
class Timing:
    """Per-call latencies in milliseconds of ``batch``-image calls."""

    times_ms: list[float]
    batch: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def p90_ms(self) -> float:
        ordered = sorted(self.times_ms)
        return ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]

    @property
    def min_ms(self) -> float:
        return min(self.times_ms)

    @property
    def images_per_s(self) -> float:
        return 1000.0 * self.batch / self.median_ms

    def summary(self) -> str:
        return (f"median {self.median_ms:.2f} ms, p90 {self.p90_ms:.2f} ms, {self.images_per_s:.1f} images/s "
                f"(batch {self.batch}, {len(self.times_ms)} runs)")


def time_callable(fn: Callable[[], Any], iters: int = 20, warmup: int = 5, device: str | torch.device = "cpu",
                  batch: int = 1, max_seconds: float | None = None) -> Timing:
    """Time ``fn()`` ``iters`` times after ``warmup`` calls (stops early after ``max_seconds`` of timing).

    On CUDA each call is bracketed by events and the device is synchronised before the first and after every
    call, so the number is the model's own latency, not the launch rate.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize(device)
    times: list[float] = []
    started = time.perf_counter()
    for _ in range(max(1, iters)):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000.0)
        if max_seconds is not None and time.perf_counter() - started > max_seconds and len(times) >= 3:
            break
    return Timing(times, batch)


def count_parameters(model: nn.Module) -> int:
    """Parameters of a model (the training form, as the paper reports them)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, image_size: tuple[int, int] = (640, 640)) -> float:
    """GFLOPs (2 per multiply-accumulate) of one forward of one image, counted on the CPU in float32.

    Pass the deploy form to count what inference computes (the paper's convention); the training form adds the
    1×1 RepVGG branches and the denoising-free extras (~2 % more).
    """
    from torch.utils.flop_counter import FlopCounterMode

    probe = copy.deepcopy(model).float().cpu().eval()
    if hasattr(probe, "to_channels_last"):
        probe.to_channels_last(False)
    pixels = torch.rand(1, 3, *image_size)
    with FlopCounterMode(display=False) as counter:
        probe(pixels)
    return counter.get_total_flops() / 1e9


def peak_memory_mib(device: str | torch.device) -> float | None:
    """Peak allocated CUDA memory since the last reset, in MiB (None on the CPU)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


class _LiveTensorBytes(TorchDispatchMode):
    """Tracks the total size of the storages that ops create while they are referenced (views share storages)."""

    def __init__(self) -> None:
        super().__init__()
        self.references: dict[int, list[int]] = {}  # storage address -> [live tensors viewing it, bytes]
        self.live = 0
        self.peak = 0

    def _release(self, address: int) -> None:
        entry = self.references[address]
        entry[0] -= 1
        if entry[0] == 0:
            self.live -= entry[1]
            del self.references[address]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # torch calls it for every op
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                address = storage.data_ptr()
                if address not in self.references:
                    self.references[address] = [0, storage.nbytes()]
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                self.references[address][0] += 1
                weakref.finalize(tensor, self._release, address)
        return out


def peak_activation_bytes(fn: Callable[[], Any]) -> int:
    """The largest total size of the tensors ``fn`` creates that are alive at the same time, in bytes.

    Weights and inputs, which exist before the call, are not counted, nor are a library's private buffers
    (cuDNN workspaces, oneDNN reorders). It is exact on any device, so it measures on the CPU what sets a GPU's
    peak memory at large batch: the activations. (Every op passes through a Python hook: slow, for measuring only.)
    """
    with _LiveTensorBytes() as tracker:
        fn()
    return tracker.peak
