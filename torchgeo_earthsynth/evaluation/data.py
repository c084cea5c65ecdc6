# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Downstream experiment training sets: a synthetic bank as one, and real ones subsampled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset, Subset

from torchgeo_earthsynth.boxes.records import box_masks, scale_boxes
from torchgeo_earthsynth.compat import DETECTION_BOXES, DETECTION_LABELS
from torchgeo_earthsynth.datasets import EarthSynth180K
from torchgeo_earthsynth.evaluation.config import TaskName


class SyntheticTrainSet(Dataset[dict[str, Tensor]]):
    """A synthetic bank folder as a downstream training set, labelled like the real data.

    The bank is read with :class:`~torchgeo_earthsynth.datasets.EarthSynth180K` (its
    ``train`` split, full scenes), after merging the parts of a
    :class:`~torchgeo_earthsynth.bank.SyntheticBank` still being written. ``lut`` is the
    datamodule's vocabulary id per class (:func:`~torchgeo_earthsynth.encodings.label_map`),
    mapped back as the downstream datamodules do: for segmentation every vocabulary id maps
    to its class, other ids to ``fill``; for classification a sample's label is its dominant class
    (:func:`~torchgeo_earthsynth.datamodules.downstream.dominant_class`), and samples
    dominated by other classes are left out. For detection a sample is the image with the
    exact boxes it was generated from (``bbox_xyxy``, ``label`` as class indices and a
    ``mask`` per box, as TorchGeo's ``VHR10`` gives them), resized to ``size``; samples
    without boxes (boxes cut from their masks would merge touching objects) or with a box
    of a class outside ``lut`` are left out.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        root: str | Path,
        task: TaskName,
        lut: Tensor,
        fill: int = 0,
        size: tuple[int, int] | None = None,
    ) -> None:
        """Initialize a new SyntheticTrainSet instance.

        Args:
            root: the bank folder (holding ``train/images`` and ``train/masks``).
            task: ``classification``, ``segmentation`` or ``detection``.
            lut: int64 [C] vocabulary id per downstream class.
            fill: class index of vocabulary ids outside the classes (segmentation).
            size: (height, width) to resize detection samples to (the real ones' patch
                size); None keeps the bank's.

        Raises:
            ValueError: if no bank sample has a dominant class among the classes
                (classification), or none has boxes of the classes only (detection).

        .. versionchanged:: 0.2
           ``task='detection'`` and ``size``.
        """
        from torchgeo_earthsynth.datamodules.downstream import dominant_class, reverse_map

        if (Path(root) / 'train' / 'parts').is_dir():  # written by SyntheticBank: merge parts
            from torchgeo_earthsynth.bank.store import SyntheticBank

            SyntheticBank(root).consolidate()
        self.corpus = EarthSynth180K(root, split='train')
        self.task = task
        self.size = size
        self.inverse = reverse_map(lut, fill=-1 if task == 'detection' else fill)
        self.items: list[tuple[int, int]] = []
        if task == 'segmentation':
            self.items = [(i, -1) for i in range(len(self.corpus))]
            return
        if task == 'detection':
            from torchgeo_earthsynth.transforms.synthetic_boxes import usable_rows

            boxes = []
            for i in range(len(self.corpus)):
                found = self.corpus.exact_boxes(i)  # from the records: no image is read
                boxes.append(None if found is None else tuple(map(torch.from_numpy, found)))
            self.items = [(i, -1) for i in usable_rows(boxes, self.inverse).tolist()]
            if not self.items:
                raise ValueError(
                    f"bank {root}: no sample was generated from boxes of the datamodule's "
                    f'classes only (vocabulary ids {lut.tolist()}); detection trains on '
                    'exact boxes, which masks cannot give (touching objects merge): fill a '
                    'bank from box layouts (configs/synthesize_detection.yaml)'
                )
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
        """One sample: ``image`` with its task's label keys.

        ``mask`` (segmentation), ``label`` (classification), or ``bbox_xyxy``, ``label`` and
        ``mask`` (detection).

        Args:
            index: index of the sample.

        Returns:
            The sample dict.
        """
        i, label = self.items[index]
        sample = self.corpus[i]
        if self.task == 'segmentation':
            return {'image': sample['image'], 'mask': self.inverse[sample['mask']]}
        if self.task == 'detection':
            return self._detection(sample)
        return {'image': sample['image'], 'label': torch.tensor(label)}

    def _detection(self, sample: dict[str, Any]) -> dict[str, Tensor]:
        """A bank sample as a real detection sample: boxes at ``size``, class indices."""
        from torchgeo_earthsynth.transforms.synthetic_sources import resize_images

        image = sample['image']
        own = (int(image.shape[-2]), int(image.shape[-1]))
        size = self.size or own
        boxes = scale_boxes(sample[DETECTION_BOXES], own, size)
        return {
            'image': resize_images(image[None], size)[0],
            DETECTION_BOXES: boxes,
            DETECTION_LABELS: self.inverse[sample[DETECTION_LABELS]],
            'mask': box_masks(boxes, size).to(torch.uint8),  # VHR10's: one per object
        }


class _SetupHook:
    """Wraps a datamodule's ``setup`` to swap or subsample its training set after it.

    ``train_samples`` holds the distinct training samples after ``setup('fit')``; a set
    smaller than ``epoch_samples`` is then repeated within each epoch.
    """

    def __init__(
        self,
        datamodule: LightningDataModule,
        train: Dataset[Any] | None,
        subset: int | float | None,
        seed: int,
        epoch_samples: int | None = None,
    ) -> None:
        self.setup = datamodule.setup
        self.datamodule = datamodule
        self.train = train
        self.subset = subset
        self.seed = seed
        self.epoch_samples = epoch_samples
        self.train_samples = 0

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
        self.train_samples = len(dm.train_dataset)
        if self.epoch_samples and 0 < self.train_samples < self.epoch_samples:
            repeats = -(-self.epoch_samples // self.train_samples)
            dm.train_dataset = ConcatDataset([dm.train_dataset] * repeats)


__all__ = ('SyntheticTrainSet',)
