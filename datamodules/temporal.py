# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Temporal datamodule: sequences of a place over dates and the image to predict."""

from __future__ import annotations

from pathlib import Path

from torchgeo_earthsynth.datasets import EarthSynthMiniTemporal

from .held_out import HeldOutHalvesDataModule

__all__ = ('EarthSynthMiniTemporalDataModule',)


class EarthSynthMiniTemporalDataModule(HeldOutHalvesDataModule):
    """LightningDataModule of :class:`~torchgeo_earthsynth.datasets.EarthSynthMiniTemporal`.

    Batches hold ``frames`` [B, 3, T, H, W], ``frame_metadata`` [B, 7, T], ``image``,
    ``metadata``, ``mask``, ``before_mask``, ``change`` and ``prompt``, all raw: no
    normalisation and no augmentation (the temporal tasks take 0..255 values; a geometric
    augmentation would have to move every frame together). The corpus's ``val`` split is
    split in half into validation and test sequences.

    .. versionadded:: 0.4
    """

    def __init__(
        self,
        batch_size: int = 16,
        num_workers: int = 0,
        root: str | Path | None = None,
        frames: int = 3,
        change_probability: float = 0.5,
        seed: int = 0,
        tile_size: int = 64,
        num_train: int = 256,
        num_val: int = 64,
    ) -> None:
        """Initialize a new EarthSynthMiniTemporalDataModule instance.

        Args:
            batch_size: size of each mini-batch.
            num_workers: number of workers for parallel data loading.
            root: parent folder of the cached mini corpus (default: the cache folder).
            frames: earlier images per sequence.
            change_probability: share of places that gain buildings before the target.
            seed: random seed of the corpus and the sequences.
            tile_size: tile size in pixels.
            num_train: number of training places.
            num_val: number of held-out places (first half validation, second half test).
        """
        super().__init__(
            EarthSynthMiniTemporal,
            batch_size,
            num_workers,
            root=root,
            frames=frames,
            change_probability=change_probability,
            seed=seed,
            size=tile_size,
            num_train=num_train,
            num_val=num_val,
        )
