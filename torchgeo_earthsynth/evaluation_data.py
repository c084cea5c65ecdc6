# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Downstream experiment training sets: a synthetic bank as one, and real ones subsampled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import Dataset, Subset

from torchgeo_earthsynth.datasets import EarthSynth180K

from .evaluation_config import TaskName


class SyntheticTrainSet(Dataset[dict[str, Tensor]]):
    """A synthetic bank folder as a downstream training set, labelled like the real data.

    The bank is read with :class:`~torchgeo_earthsynth.datasets.EarthSynth180K` (its
    ``train`` split, full scenes), after merging the parts of a
    :class:`~torchgeo_earthsynth.bank.SyntheticBank` still being written. ``lut`` is the
    datamodule's vocabulary id per class (:func:`~torchgeo_earthsynth.vocabulary.label_map`),
    mapped back as the downstream datamodules do: for segmentation every vocabulary id maps
    to its class, other ids to ``fill``; for classification a sample's label is its dominant class
    (:func:`~torchgeo_earthsynth.datamodules.downstream.dominant_class`), and samples
    dominated by other classes are left out.

    .. versionadded:: 0.1
    """

    def __init__(self, root: str | Path, task: TaskName, lut: Tensor, fill: int = 0) -> None:
        """Initialize a new SyntheticTrainSet instance.

        Args:
            root: the bank folder (holding ``train/images`` and ``train/masks``).
            task: ``classification`` or ``segmentation``.
            lut: int64 [C] vocabulary id per downstream class.
            fill: class index of vocabulary ids outside the classes (segmentation).

        Raises:
            ValueError: if no bank sample has a dominant class among the classes
                (classification).
        """
        from torchgeo_earthsynth.datamodules.downstream import dominant_class, reverse_map

        if (Path(root) / 'train' / 'parts').is_dir():  # written by SyntheticBank: merge parts
            from torchgeo_earthsynth.bank import SyntheticBank

            SyntheticBank(root).consolidate()
        self.corpus = EarthSynth180K(root, split='train')
        self.task = task
        self.inverse = reverse_map(lut, fill=fill)
        self.items: list[tuple[int, int]] = []
        if task == 'segmentation':
            self.items = [(i, -1) for i in range(len(self.corpus))]
            return
        index_of = {int(v): i for i, v in reversed(list(enumerate(lut.tolist())))}
        for i in range(len(self.corpus)):
            dominant = dominant_class(self.corpus[i]['mask'])
            if dominant in index_of:
                self.items.append((i, index_of[dominant]))
        if not self.items:
            raise ValueError(
                f'bank {root}: no sample is dominated by a class of the '
                f'datamodule (vocabulary ids {lut.tolist()})'
            )

    def __len__(self) -> int:
        """Number of usable bank samples."""
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """One sample: ``image`` and ``mask`` (segmentation) or ``label`` (classification).

        Args:
            index: index of the sample.

        Returns:
            The sample dict.
        """
        i, label = self.items[index]
        sample = self.corpus[i]
        if self.task == 'segmentation':
            return {'image': sample['image'], 'mask': self.inverse[sample['mask']]}
        return {'image': sample['image'], 'label': torch.tensor(label)}


class _SetupHook:
    """Wraps a datamodule's ``setup`` to swap or subsample its training set after it."""

    def __init__(
        self,
        datamodule: LightningDataModule,
        train: Dataset[Any] | None,
        subset: int | float | None,
        seed: int,
    ) -> None:
        self.setup = datamodule.setup
        self.datamodule = datamodule
        self.train = train
        self.subset = subset
        self.seed = seed

    def __call__(self, stage: str) -> None:
        self.setup(stage)
        if stage != 'fit':
            return
        dm: Any = self.datamodule
        if self.train is not None:
            dm.train_dataset = self.train
        elif self.subset is not None:
            total = len(dm.train_dataset)
            count = self.subset if isinstance(self.subset, int) else round(self.subset * total)
            count = max(1, min(total, count))
            order = torch.randperm(total, generator=torch.Generator().manual_seed(self.seed))
            dm.train_dataset = Subset(dm.train_dataset, sorted(order[:count].tolist()))


__all__ = ('SyntheticTrainSet',)
