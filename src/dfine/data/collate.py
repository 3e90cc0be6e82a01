"""Batching: stacking, multi-scale training sizes, and a DataLoader that forwards the epoch.

Multi-scale (the original's ``src/data/dataloader.py: BatchImageCollateFunction``): until ``stop_epoch`` every
batch gets one size drawn uniformly from
``[480, 512, 544, 576, 608] + [640] * base_size_repeat + [672, 704, 736, 768, 800]``, scaled by ``base / 640`` and
rounded to multiples of 32 (so a 320 model trains at 256..416), and the whole batch is resized with
``F.interpolate`` in its default nearest mode, as the original does. Boxes are normalised, so they do not change.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from dfine.config.image_size import image_size_hw
from dfine.data.epoch import SharedEpoch
from dfine.data.mosaic import DenseO2OPolicy, mixup
from dfine.data.seeding import batch_seed
from dfine.errors import ConfigError

_SMALLER = (480, 512, 544, 576, 608)
_LARGER = (672, 704, 736, 768, 800)


def _round32(x: float) -> int:
    return max(32, int(x / 32 + 0.5) * 32)


def multiscale_sizes(base_size: int | tuple[int, int], base_size_repeat: int) -> list[tuple[int, int]]:
    """The ``(height, width)`` sizes a multi-scale batch is drawn from (repeats make the base size likelier).

    Args:
        base_size: the training size, an int or ``(height, width)``, multiples of 32.
        base_size_repeat: how many times the base size appears in the list.
    """
    h, w = image_size_hw(base_size)
    scales = [s / 640 for s in (*_SMALLER, *([640] * base_size_repeat), *_LARGER)]
    return [(h, w) if s == 1.0 else (_round32(h * s), _round32(w * s)) for s in scales]


class BatchCollator:
    """Collate ``(image, target)`` items into ``{"pixel_values": (B, 3, H, W), "labels": [target, ...]}``.

    Args:
        base_size: the training size (int or ``(height, width)``).
        base_size_repeat: weight of the base size among the multi-scale sizes; None disables multi-scale
            (use None for evaluation).
        stop_epoch: first epoch with all batches at the base size; None keeps multi-scale on.
        seed: the run's seed; a batch's size is drawn from a generator seeded by ``(seed, epoch, its image ids)``
            (:mod:`dfine.data.seeding`), so it does not depend on the worker that collates it.
        mixup: DEIM's policy (:mod:`dfine.data.mosaic`): in its epochs, a batch is mixed with itself shifted by one
            image with its ``mixup_prob``.

    Each target's ``load_seconds`` (the time its data set item took) is removed and summed into the batch's
    ``worker_seconds``: the data preparation time that ``dfine train --profile`` reports.
    """

    def __init__(
        self,
        base_size: int | tuple[int, int] = 640,
        base_size_repeat: int | None = None,
        stop_epoch: int | None = None,
        seed: int = 0,
        mixup: DenseO2OPolicy | None = None,
    ) -> None:
        self.base_size = image_size_hw(base_size)
        self.sizes = None if base_size_repeat is None else multiscale_sizes(base_size, base_size_repeat)
        self.stop_epoch = stop_epoch
        self.seed = seed
        self.mixup = mixup
        self.epoch = SharedEpoch()

    def set_epoch(self, epoch: int) -> None:
        self.epoch.set(epoch)

    @property
    def multiscale(self) -> bool:
        """Whether batches of the current epoch get random sizes."""
        return self.sizes is not None and (self.stop_epoch is None or self.epoch.value < self.stop_epoch)

    def __call__(self, batch: Sequence[tuple[Tensor, dict[str, Any]]]) -> dict[str, Any]:
        started = time.perf_counter()
        loading = sum(float(target.pop("load_seconds", 0.0)) for _, target in batch)
        images = [image for image, _ in batch]
        shapes = {tuple(image.shape) for image in images}
        if len(shapes) != 1:
            raise ValueError(f"images of one batch must have the same shape (resize them in the transforms): {shapes}")
        pixel_values = torch.stack([image.as_subclass(Tensor) for image in images])
        labels = [target for _, target in batch]
        generator = torch.Generator().manual_seed(
            batch_seed(self.seed, self.epoch.value, (int(target.get("image_id", 0)) for target in labels)))
        if self.sizes is not None and self.multiscale:
            size = self.sizes[int(torch.randint(len(self.sizes), (), generator=generator))]
            if size != tuple(pixel_values.shape[-2:]):
                pixel_values = F.interpolate(pixel_values, size=size)
        if (self.mixup is not None and len(labels) > 1 and self.mixup.active(self.epoch.value)
                and float(torch.rand((), generator=generator)) < self.mixup.mixup_prob):
            ratio = 0.45 + 0.1 * float(torch.rand((), generator=generator))  # DEIM: uniform in [0.45, 0.55]
            pixel_values, labels = mixup(pixel_values, labels, ratio)
        return {"pixel_values": pixel_values, "labels": labels,
                "worker_seconds": loading + time.perf_counter() - started}


class EvalShardSampler(Sampler[int]):
    """Contiguous, unpadded shards of a data set for distributed evaluation.

    ``DistributedSampler`` pads the last shard by repeating images, which would count them twice in COCO metrics.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        n = len(dataset)  # type: ignore[arg-type]
        per_rank = -(-n // num_replicas)
        self.indices = list(range(rank * per_rank, min(n, (rank + 1) * per_rank)))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class EpochDataLoader(DataLoader):
    """A DataLoader whose ``set_epoch`` reaches the sampler, the data set's transforms and the collate function.

    Call ``set_epoch(epoch)`` before iterating over each epoch (see :mod:`dfine.data.epoch`).
    """

    def set_epoch(self, epoch: int) -> None:
        for part in (self.sampler, self.dataset, self.collate_fn):
            set_epoch = getattr(part, "set_epoch", None)
            if set_epoch is not None:
                set_epoch(epoch)


def default_workers(preferred: int = 4) -> int:
    """``preferred`` data-loading processes, but no more than the CPU cores this process may run on.

    More workers than cores only adds context switches (and torch warns about it once per loader it creates, i.e.
    every epoch). ``sched_getaffinity`` sees the cores a container or ``taskset`` allows, ``cpu_count`` all of them.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    return max(0, min(preferred, cores))


def _seed_worker(worker_id: int) -> None:
    # The DataLoader seeds torch and `random` per worker from its base seed; numpy gets a seed derived from it too.
    np.random.seed(torch.initial_seed() % 2**32)


def build_dataloader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    workers: int | None = None,
    distributed: bool | None = None,
    drop_last: bool = False,
    collate_fn: BatchCollator | None = None,
    seed: int = 0,
    pin_memory: bool = False,
    persistent_workers: bool = False,
) -> EpochDataLoader:
    """A DataLoader for training (``shuffle=True, drop_last=True``) or evaluation.

    Args:
        dataset: a :class:`DetectionDataset` (or any map-style data set of ``(image, target)``).
        batch_size: images per batch on this process.
        shuffle: reshuffle every epoch (per ``set_epoch`` under DDP).
        workers: DataLoader worker processes (0 loads in the main process); None: :func:`default_workers`.
        distributed: shard across ``torch.distributed`` ranks; None does so when a process group is initialised.
        drop_last: drop the last incomplete batch (training).
        collate_fn: the batch collator; None stacks the images as they come (no multi-scale).
        seed: base seed for shuffling and worker augmentation RNGs (the rank is added).
        pin_memory: pin batches for faster host-to-GPU copies.
        persistent_workers: keep workers alive between epochs (the epoch still reaches them).
    """
    if workers is None:
        workers = default_workers()
    if workers < 0:
        raise ConfigError(f"the number of data-loading workers must be >= 0, got {workers}")
    is_distributed = dist.is_available() and dist.is_initialized()
    if distributed and not is_distributed:
        raise RuntimeError("build_dataloader(distributed=True) needs an initialised torch.distributed process group")
    use_distributed = is_distributed if distributed is None else distributed
    rank = dist.get_rank() if use_distributed else 0
    sampler: Sampler[int] | None = None
    if use_distributed and (shuffle or drop_last):
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    elif use_distributed:
        sampler = EvalShardSampler(dataset, dist.get_world_size(), rank)
    generator = torch.Generator().manual_seed(seed + rank)
    return EpochDataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_fn if collate_fn is not None else BatchCollator(),
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and workers > 0,
        worker_init_fn=_seed_worker if workers > 0 else None,
        generator=generator,
    )
