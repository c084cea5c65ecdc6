# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Paired super-resolution datamodule: low-res multispectral stacks and high-res RGB scenes."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from torchgeo_earthsynth.datasets import EarthSynthMiniSR

from .held_out import HeldOutHalvesDataModule

__all__ = ('EarthSynthMiniSRDataModule',)


class EarthSynthMiniSRDataModule(HeldOutHalvesDataModule):
    """LightningDataModule of :class:`~torchgeo_earthsynth.datasets.EarthSynthMiniSR` pairs.

    Batches hold ``image`` [B, 3, H, W] (the high-res RGB target), ``low_res`` [B, C, h, w]
    (any band count), ``mask``, ``prompt`` and ``metadata``, all raw: no normalisation and
    no augmentation (a geometric augmentation would have to move both resolutions
    together), as the super-resolution tasks take 0..255 values. The corpus's ``val`` split
    is split in half into validation and test scenes.

    .. versionadded:: 0.3
    """

    def __init__(
        self,
        batch_size: int = 16,
        num_workers: int = 0,
        root: str | Path | None = None,
        bands: Literal['sentinel2', 'rgb'] = 'sentinel2',
        scale: int = 2,
        noise_std: float = 2.0,
        blur_sigma: float | None = None,
        seed: int = 0,
        tile_size: int = 64,
        num_train: int = 256,
        num_val: int = 64,
    ) -> None:
        """Initialize a new EarthSynthMiniSRDataModule instance.

        Args:
            batch_size: size of each mini-batch.
            num_workers: number of workers for parallel data loading.
            root: parent folder of the cached mini corpus (default: the cache folder).
            bands: ``sentinel2`` (10 bands) or ``rgb`` (3) in ``low_res``.
            scale: super-resolution factor.
            noise_std: noise of the low-res view (0..255 scale).
            blur_sigma: blur before decimation (None: ``scale / 2``).
            seed: random seed of the corpus.
            tile_size: high-res tile size in pixels.
            num_train: number of training scenes.
            num_val: number of held-out scenes (first half validation, second half test).
        """
        super().__init__(
            EarthSynthMiniSR,
            batch_size,
            num_workers,
            root=root,
            bands=bands,
            scale=scale,
            noise_std=noise_std,
            blur_sigma=blur_sigma,
            seed=seed,
            size=tile_size,
            num_train=num_train,
            num_val=num_val,
        )

    @property
    def num_bands(self) -> int:
        """Bands of ``low_res``."""
        return 10 if self.kwargs['bands'] == 'sentinel2' else 3
