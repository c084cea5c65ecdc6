# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Multispectral datamodule: the mini corpus's scenes as 13 Sentinel-2 or 4 RGBI bands."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from torchgeo_earthsynth.datasets import EarthSynthMiniMultispectral

from .held_out import HeldOutHalvesDataModule

__all__ = ('EarthSynthMiniMultispectralDataModule',)


class EarthSynthMiniMultispectralDataModule(HeldOutHalvesDataModule):
    """LightningDataModule of :class:`~torchgeo_earthsynth.datasets.EarthSynthMiniMultispectral`.

    Batches hold ``image`` [B, C, H, W] in the bands' physical units (no normalisation: the
    multispectral task maps them to 0..255 per band with its bands), ``mask``, ``prompt`` and
    the scenes' other keys. The corpus's ``val`` split is split in half into validation and
    test scenes.

    .. versionadded:: 0.5
    """

    def __init__(
        self,
        batch_size: int = 16,
        num_workers: int = 0,
        root: str | Path | None = None,
        variant: Literal['sentinel2', 'rgbi'] = 'sentinel2',
        seed: int = 0,
        tile_size: int = 64,
        num_train: int = 256,
        num_val: int = 64,
        long_tail: bool = False,
    ) -> None:
        """Initialize a new EarthSynthMiniMultispectralDataModule instance.

        Args:
            batch_size: size of each mini-batch.
            num_workers: number of workers for parallel data loading.
            root: parent folder of the cached mini corpus (default: the cache folder).
            variant: ``sentinel2`` (13 bands, reflectance) or ``rgbi`` (4 bands, dn8).
            seed: random seed of the corpus.
            tile_size: tile size in pixels.
            num_train: number of training scenes.
            num_val: number of held-out scenes (first half validation, second half test).
            long_tail: rare classes in few scenes.
        """
        super().__init__(
            EarthSynthMiniMultispectral,
            batch_size,
            num_workers,
            root=root,
            variant=variant,
            seed=seed,
            size=tile_size,
            num_train=num_train,
            num_val=num_val,
            long_tail=long_tail,
        )
