# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""A training loader's place in its epoch, saved in checkpoints so a resumed run continues it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from torch.utils.data import BatchSampler, Sampler

__all__ = ('EpochOrder', 'ResumableBatchSampler')


class EpochOrder:
    """The batches of the current training epoch and how many the model has consumed.

    The datamodule counts a batch when it reaches the model (``on_after_batch_transfer``),
    not when the loader yields it: Lightning and DataLoader workers fetch ahead. A
    checkpoint keeps :meth:`state_dict`; after :meth:`load_state_dict` the next epoch
    iterator yields the saved epoch's remaining batches instead of drawing a new order.

    .. versionadded:: 0.2
    """

    def __init__(self) -> None:
        """Initialize a new EpochOrder instance."""
        self.batches: list[list[int]] = []
        self.consumed = 0
        self._resume: dict[str, Any] | None = None

    def start(self, draw: Iterable[list[int]]) -> list[list[int]]:
        """Begin an epoch: the resumed epoch's remaining batches, else a new order.

        Args:
            draw: the sampler's batches for a new epoch (iterated only when needed, so its
                random draws happen exactly when they would without resuming).

        Returns:
            The batches to yield.
        """
        resume, self._resume = self._resume, None
        if resume is not None and resume['consumed'] < len(resume['batches']):
            self.batches, self.consumed = resume['batches'], resume['consumed']
        else:
            self.batches, self.consumed = [list(batch) for batch in draw], 0
        return self.batches[self.consumed :]

    def step(self) -> None:
        """Count a batch that reached the model."""
        self.consumed += 1

    def state_dict(self) -> dict[str, Any]:
        """The current epoch's batches (dataset indices) and how many were consumed."""
        return {'batches': self.batches, 'consumed': self.consumed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue the saved epoch at the next epoch iterator.

        Args:
            state_dict: from :meth:`state_dict`.
        """
        self._resume = {
            'batches': [list(batch) for batch in state_dict['batches']],
            'consumed': int(state_dict['consumed']),
        }


class ResumableBatchSampler(BatchSampler):
    """A ``BatchSampler`` whose epochs go through an :class:`EpochOrder`.

    Args:
        sampler: the dataset indices (e.g. a ``RandomSampler``; Lightning may substitute
            a ``DistributedSampler``).
        batch_size: indices per batch.
        drop_last: drop a short last batch.
        order: shared with the datamodule, which counts consumed batches and checkpoints it.

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        sampler: Sampler[int] | Iterable[int],
        batch_size: int,
        drop_last: bool,
        order: EpochOrder,
    ) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.order = order

    def __iter__(self) -> Iterator[list[int]]:
        """This epoch's batches (a generator: nothing is drawn before the first one)."""
        yield from self.order.start(super().__iter__())
