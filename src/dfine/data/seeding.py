"""Random augmentation that depends on what is augmented, not on which process does it.

Each training sample draws its augmentation from a generator seeded by ``(run seed, epoch, sample index)``, and
each batch its multi-scale size from ``(run seed, epoch, the batch's image ids)``. The result is the same whether
the data loader uses no worker, one, or eight, whether its workers live across epochs (``persistent_workers``) or
not, and whether the run was interrupted and resumed: the only state is the epoch, which reaches the workers
through :class:`~dfine.data.epoch.SharedEpoch`.

Samples prepared in the main process (no workers) must not disturb the main process' own random stream (the
model's denoising noise draws from it), so the global generators are forked around each sample and restored.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np
import torch


def derived_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (``numpy.random.SeedSequence``: neighbouring inputs give unrelated seeds)."""
    state = np.random.SeedSequence([int(p) % 2**64 for p in parts]).generate_state(1, np.uint64)[0]
    return int(state % (2**63))


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the body with torch's CPU generator and Python's ``random`` seeded by ``seed``; both are restored after."""
    saved = random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(saved)


def batch_seed(base: int, epoch: int, image_ids: Iterable[int]) -> int:
    """The seed of one batch's random choices (its multi-scale size)."""
    return derived_seed(base, epoch, *image_ids)
