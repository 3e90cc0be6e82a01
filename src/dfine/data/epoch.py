"""How the training epoch reaches DataLoader worker processes.

The strong augmentations and multi-scale batches switch off at a "stop epoch", but transforms and the collate
function run inside DataLoader workers, which hold *copies* of the data set and collate function: a plain attribute
set in the main process after the workers started is never seen by them (persistent workers live for the whole run;
even fresh workers are forked when the iterator is created, so ordering matters). The original pushes the epoch into
the data set and relies on recreating iterators.

:class:`SharedEpoch` keeps the number in a shared-memory tensor instead. Forked workers inherit the mapping and
spawned workers receive it through torch's multiprocessing pickler, so a ``set`` in the main process is visible to
every worker, persistent or not, from the next sample it prepares. Call ``loader.set_epoch(epoch)`` (see
:class:`dfine.data.collate.EpochDataLoader`) *before* iterating over the epoch: workers start preparing batches as
soon as the iterator is created.
"""

from __future__ import annotations

import torch


class SharedEpoch:
    """An integer epoch shared between the main process and DataLoader workers.

    Args:
        epoch: the initial value.
    """

    def __init__(self, epoch: int = 0) -> None:
        self._value = torch.zeros((), dtype=torch.int64).share_memory_()
        self._value.fill_(epoch)

    @property
    def value(self) -> int:
        """The current epoch, as last set in any process."""
        return int(self._value.item())

    def set(self, epoch: int) -> None:
        """Set the epoch for this process and every worker holding this object."""
        self._value.fill_(int(epoch))

    def __repr__(self) -> str:
        return f"SharedEpoch({self.value})"
