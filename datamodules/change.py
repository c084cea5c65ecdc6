# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Change detection on the mini corpus, in LEVIR-CD's layout, with synthetic change pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from torchgeo_earthsynth.datasets import EarthSynthMiniTemporal
from torchgeo_earthsynth.transforms.synthetic_change import SyntheticChangePairs

from .held_out import HeldOutHalvesDataModule

__all__ = ('MiniChangeDetectionDataModule', 'to_change_pair')


def to_change_pair(sample: dict[str, Any]) -> dict[str, Tensor]:
    """A one-frame sequence as a LEVIR-CD sample: ``image`` [2, 3, H, W], ``mask`` [1, H, W]."""
    pair = torch.stack([sample['frames'][:, -1], sample['image']])
    return {'image': pair, 'mask': sample['change'][None]}


class _Scale(nn.Module):
    """Batch augmentation: 0..255 pairs -> 0..1 (TorchGeo's default normalisation).

    (TorchGeo 0.8.1's LEVIR-CD augmentation refuses [B, 1, H, W] masks under kornia 0.9.)
    """

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Scale ``image``."""
        return {**batch, 'image': batch['image'] / 255}


class MiniChangeDetectionDataModule(HeldOutHalvesDataModule):
    """LEVIR-CD-style change detection over the mini corpus's places (two dates each).

    Each sample is a place a year apart (:class:`~torchgeo_earthsynth.datasets.
    EarthSynthMiniTemporal` with one earlier frame): ``image`` float [2, 3, H, W] in 0..255
    (before, after) and ``mask`` int64 [1, H, W], 1 where buildings appeared (LEVIR-CD's
    encoding), for TorchGeo's ``ChangeDetectionTask``. Batches are scaled to 0..1. The
    corpus's ``val`` split is halved into validation and test places. With ``synthetic``
    set, training batches gain synthetic pairs (:class:`~torchgeo_earthsynth.transforms.
    SyntheticChangePairs`, put in the ``train_aug`` slot, raw pairs before the scaling).

    .. versionadded:: 0.4
    """

    #: The change classes, LEVIR-CD's.
    classes: ClassVar[tuple[str, ...]] = ('no change', 'change')

    def __init__(
        self,
        batch_size: int = 16,
        num_workers: int = 0,
        root: str | Path | None = None,
        change_probability: float = 0.5,
        seed: int = 0,
        tile_size: int = 32,
        num_train: int = 256,
        num_val: int = 64,
        synthetic: SyntheticChangePairs | None = None,
    ) -> None:
        """Initialize a new MiniChangeDetectionDataModule instance.

        Args:
            batch_size: size of each mini-batch.
            num_workers: number of workers for parallel data loading.
            root: parent folder of the cached mini corpus (default: the cache folder).
            change_probability: share of places that gain buildings between the dates.
            seed: random seed of the corpus and of the pairs.
            tile_size: tile size in pixels.
            num_train: number of training places.
            num_val: number of held-out places (first half validation, second half test).
            synthetic: synthetic change pairs for training batches.
        """
        super().__init__(
            EarthSynthMiniTemporal,
            batch_size,
            num_workers,
            root=root,
            frames=1,
            change_probability=change_probability,
            seed=seed,
            size=tile_size,
            num_train=num_train,
            num_val=num_val,
            transforms=to_change_pair,
        )
        self.aug = _Scale()
        self.synthetic = synthetic
        if synthetic is not None:
            synthetic.attach(self)

    def plot(self, sample: dict[str, Tensor], suptitle: str | None = None) -> Figure:
        """Plot a pair and its change mask (``prediction`` too, if the sample has one).

        Args:
            sample: a sample (``image`` [2, 3, H, W] in 0..255 or 0..1, ``mask``).
            suptitle: optional figure title.

        Returns:
            The figure.
        """
        import matplotlib.pyplot as plt

        image = sample['image'].float()
        image = image / 255 if image.max() > 1 else image
        panels = [('before', image[0].permute(1, 2, 0)), ('after', image[1].permute(1, 2, 0))]
        panels.append(('change', sample['mask'].squeeze(0)))
        if 'prediction' in sample:
            panels.append(('prediction', sample['prediction'].squeeze(0)))
        figure, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3))
        for axis, (title, values) in zip(axes, panels):
            axis.imshow(values.clamp(0, 1).numpy(), cmap='gray', vmin=0, vmax=1)
            axis.set_title(title)
            axis.axis('off')
        if suptitle is not None:
            figure.suptitle(suptitle)
        return figure
