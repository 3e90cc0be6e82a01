"""Distributed-training helpers (the original's ``src/misc/dist_utils.py``).

Every function here is safe to call in a plain single-process run: rank 0, world size 1, collectives that return
their input. Processes are started by ``torchrun``, which sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``;
:func:`init_distributed` reads them and joins the process group.

Differences from the original (``src/misc/dist_utils.py``): the CUDA device is the *local* rank (the original used
the global rank, which breaks on the second node), and a failed ``init_process_group`` under ``torchrun`` is an
error instead of a silent fall-back to one process.
"""

from __future__ import annotations

import datetime
import logging
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

logger = logging.getLogger(__name__)


def is_distributed() -> bool:
    """Whether a default process group is initialised (and so collectives talk to other ranks)."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Global rank of this process; 0 when not distributed."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes in the default group; 1 when not distributed."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on global rank 0, the process that writes checkpoints, logs and plots."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank; a no-op when not distributed."""
    if is_distributed() and get_world_size() > 1:
        dist.barrier()


def _collective_device() -> torch.device:
    # NCCL only moves CUDA tensors; gloo (and everything else) works on CPU tensors.
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """Mean of ``tensor`` over all ranks.

    Args:
        tensor: any floating tensor with the same shape on every rank.

    Returns:
        A new tensor (on ``tensor``'s device) holding the average; the input is left unchanged.
    """
    world_size = get_world_size()
    if world_size == 1:
        return tensor.detach().clone()
    buffer = tensor.detach().to(_collective_device(), copy=True)
    dist.all_reduce(buffer)
    return (buffer / world_size).to(tensor.device)


def all_ranks_true(flag: Tensor) -> bool:
    """Whether the boolean scalar ``flag`` is true on every rank (one MIN all-reduce; the local value alone when
    not distributed). Every rank must call it."""
    value = flag.detach().to(torch.float32).reshape(1)
    if get_world_size() > 1:
        value = value.to(_collective_device())
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item() > 0)


def reduce_dict(values: Mapping[str, Tensor], average: bool = True) -> dict[str, Tensor]:
    """All-reduce a dict of scalar tensors (e.g. the loss terms) in one collective.

    Every rank must pass the same keys. Keys are sorted before stacking so that ranks whose dicts were built in a
    different order still add matching terms.

    Args:
        values: name -> scalar tensor.
        average: divide the sums by the world size.

    Returns:
        A new dict with the same keys holding detached reduced scalars.
    """
    world_size = get_world_size()
    if world_size == 1 or not values:
        return {key: value.detach() for key, value in values.items()}
    names = sorted(values)
    reference = values[names[0]]
    stacked = torch.stack([values[name].detach().reshape(()).float() for name in names])
    stacked = stacked.to(_collective_device())
    dist.all_reduce(stacked)
    if average:
        stacked /= world_size
    stacked = stacked.to(reference.device)
    return {name: stacked[i] for i, name in enumerate(names)}


def all_gather_object(obj: Any) -> list[Any]:
    """Gather a picklable object from every rank.

    Returns:
        ``[obj_rank0, obj_rank1, ...]`` on every rank; ``[obj]`` when not distributed.
    """
    world_size = get_world_size()
    if world_size == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank (what the others pass is ignored); ``obj`` itself when not
    distributed. Every rank must call it."""
    if get_world_size() == 1:
        return obj
    holder = [obj if get_rank() == src else None]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def read_on_every_rank(path: Path, load: Callable[[Path], Any]) -> Any:
    """``load(path)``'s result on every rank, or None on every rank when rank 0 has no such file; every rank must
    call it.

    Ranks read the file themselves when all of them see it (one shared run folder). When some do not (nodes that
    each keep the run folder on their own disk), rank 0 reads it and sends the result to all: ranks that went on
    with their own state instead would train diverging models without a word.
    """
    if get_world_size() == 1:
        return load(path) if path.is_file() else None
    seen = all_gather_object(path.is_file())
    if not seen[0]:
        return None
    if all(seen):
        return load(path)
    if get_rank() == 0:
        logger.info("%s is not on every node: rank 0 sends its copy", path)
    return broadcast_object(load(path) if get_rank() == 0 else None)


@dataclass(frozen=True)
class _Unreadable:
    """What a rank sends in place of a file it could not load."""

    reason: str


def read_agreed(path: Path, load: Callable[[Path], Any],
                errors: tuple[type[BaseException], ...]) -> tuple[Any, str | None]:
    """:func:`read_on_every_rank`, with every rank agreeing on failure: ``(result, None)``, or ``(None, reason)`` on
    every rank when any rank's ``load`` raised one of ``errors`` (a rank going on alone would diverge, or wait).
    ``result`` is None when rank 0 has no such file. Every rank must call it."""

    def attempt(file: Path) -> Any:
        try:
            return load(file)
        except errors as error:
            return _Unreadable(str(error) or type(error).__name__)

    result = read_on_every_rank(path, attempt)
    reasons = all_gather_object(result.reason if isinstance(result, _Unreadable) else None)
    reason = next((r for r in reasons if r), None)
    return (None, reason) if reason is not None else (result, None)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def init_distributed(
    backend: str | None = None, timeout: datetime.timedelta | None = None
) -> tuple[int, int, int]:
    """Join the process group described by ``torchrun``'s environment, if any.

    Without ``RANK``/``WORLD_SIZE`` in the environment (a plain ``python train.py`` run) nothing is initialised
    and ``(0, 0, 1)`` is returned. Calling it again after a successful initialisation returns the current values.

    Args:
        backend: ``"nccl"``/``"gloo"``; ``None`` picks NCCL when CUDA is available, else gloo.
        timeout: collective timeout passed to ``init_process_group`` (``None`` keeps PyTorch's default).

    Returns:
        ``(rank, local_rank, world_size)``.
    """
    rank = _env_int("RANK")
    world_size = _env_int("WORLD_SIZE")
    local_rank = _env_int("LOCAL_RANK")
    if is_distributed():
        return get_rank(), local_rank if local_rank is not None else 0, get_world_size()
    if rank is None or world_size is None:
        return 0, 0, 1
    if local_rank is None:
        local_rank = rank
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        # The local rank indexes the GPUs of *this* node; the global rank would run past them on node 2.
        torch.cuda.set_device(local_rank)
    kwargs: dict[str, Any] = {"backend": backend, "init_method": "env://", "rank": rank, "world_size": world_size}
    if timeout is not None:
        kwargs["timeout"] = timeout
    dist.init_process_group(**kwargs)
    logger.info("initialised %s process group: rank %d/%d (local rank %d)", backend, rank, world_size, local_rank)
    barrier()
    return rank, local_rank, world_size


def cleanup_distributed() -> None:
    """Destroy the default process group if one exists."""
    if is_distributed():
        barrier()
        dist.destroy_process_group()


def seed_everything(seed: int, rank: int | None = None) -> int:
    """Seed ``random``, NumPy and torch (all CUDA devices included) with ``seed + rank``.

    Each rank gets a different seed so that augmentations differ across GPUs, as in the original. cuDNN
    determinism is left alone (it costs speed and the original does not enable it).

    Args:
        seed: the base seed from the config.
        rank: offset; ``None`` uses this process' global rank.

    Returns:
        The seed actually applied.
    """
    effective = int(seed) + (get_rank() if rank is None else int(rank))
    random.seed(effective)
    # NumPy's legacy seeding accepts only 32-bit values.
    np.random.seed(effective % 2**32)
    torch.manual_seed(effective)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(effective)
    return effective
