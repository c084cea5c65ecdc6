# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The mini corpora's datamodules: raw batches, the ``val`` split halved into val and test."""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.utils.data import Subset

from torchgeo_earthsynth.compat import NonGeoDataModule

__all__ = ('HeldOutHalvesDataModule',)


class HeldOutHalvesDataModule(NonGeoDataModule):
    """A datamodule of a mini dataset with ``train`` and ``val`` splits, batches left raw.

    The ``val`` split's first half validates, its second half tests, all of it predicts;
    ``aug`` is the identity (the tasks take the datasets' own units; TorchGeo's default
    divides by 255). Subclasses pass their dataset class and its arguments.

    .. versionadded:: 0.5
    """

    def __init__(self, dataset_class: type[Any], *args: Any, **kwargs: Any) -> None:
        """Initialize a new HeldOutHalvesDataModule instance.

        Args:
            dataset_class: the dataset (``split`` is set here).
            *args: ``NonGeoDataModule``'s ``batch_size`` and ``num_workers``.
            **kwargs: the dataset's arguments.
        """
        super().__init__(dataset_class, *args, **kwargs)
        self.aug = nn.Identity()

    def setup(self, stage: str) -> None:
        """Set up the train, validation (first half of ``val``) and test datasets.

        Args:
            stage: ``fit``, ``validate``, ``test`` or ``predict``.
        """
        dataset_class: Any = self.dataset_class  # a mini dataset: it takes split=
        if stage == 'fit':
            self.train_dataset = dataset_class(split='train', **self.kwargs)
        held_out = dataset_class(split='val', **self.kwargs)
        half = len(held_out) // 2
        self.val_dataset = Subset(held_out, range(half))
        self.test_dataset = Subset(held_out, range(half, len(held_out)))
        self.predict_dataset = held_out

    def plot(self, *args: Any, **kwargs: Any) -> Any:
        """Plot a sample with the dataset's ``plot``."""
        if self.val_dataset is None:
            return None
        dataset: Any = self.val_dataset
        return dataset.dataset.plot(*args, **kwargs)
