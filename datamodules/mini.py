# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The EarthSynthMini datamodule: the bundled mini corpus, made on first use."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from torch import nn

from torchgeo_earthsynth.datasets import EarthSynthMini, make_mini_corpus
from torchgeo_earthsynth.datasets.mini import DEFAULT_LATITUDES

from .earthsynth180k import EarthSynth180KDataModule


class EarthSynthMiniDataModule(EarthSynth180KDataModule):
    """LightningDataModule for the bundled procedural corpus, needing no data path.

    Same loaders, sampling and augmentations as :class:`EarthSynth180KDataModule` over
    :class:`~torchgeo_earthsynth.datasets.EarthSynthMini`, generated once into ``root``
    (default: the cache folder). Its tile size is ``tile_size``; ``size`` resizes batches.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        batch_size: int = 32,
        num_workers: int = 0,
        size: int | None = None,
        crop: bool = False,
        normalize: bool = True,
        flip: bool = True,
        balanced: bool = False,
        cf_comp: nn.Module | None = None,
        mode: Literal['full', 'category', 'both'] = 'full',
        root: str | Path | None = None,
        seed: int = 0,
        tile_size: int = 64,
        num_train: int = 256,
        num_val: int = 64,
        latitudes: tuple[float, float] = DEFAULT_LATITUDES,
        long_tail: bool = False,
        **kwargs: Any,
    ) -> None:
        """Initialize a new EarthSynthMiniDataModule instance.

        Args:
            batch_size: size of each mini-batch.
            num_workers: number of workers for parallel data loading.
            size: side in pixels that batches are resized (or cropped) to; None keeps
                ``tile_size``.
            crop: crop to ``size`` instead of resizing.
            normalize: divide images by 255 (TorchGeo's convention); False keeps 0..255.
            flip: random horizontal and vertical flips of training batches.
            balanced: category-balanced sampling of training samples (with replacement).
            cf_comp: batch-level module applied to raw training batches on the device.
            mode: ``full`` scenes, single-``category`` samples, or ``both``.
            root: parent folder of the generated corpus (default: the cache folder).
            seed: random seed of the corpus.
            tile_size: tile size of the corpus in pixels.
            num_train: number of training scenes.
            num_val: number of validation scenes.
            latitudes: ``(south, north)`` bounds of the scenes' latitudes; ``(0, 60)``
                keeps every scene in the north, where the month alone sets the season.
            long_tail: rare classes (buildings, water, vehicles, tanks) in few scenes.
            **kwargs: additional keyword arguments passed to
                :class:`~torchgeo_earthsynth.datasets.EarthSynthMini`.
        """
        super().__init__(
            batch_size, num_workers, size, crop, normalize, flip, balanced, cf_comp, mode=mode
        )
        # Same pipeline, other dataset: EarthSynthMini takes no download/strict.
        self.dataset_class = EarthSynthMini
        self.kwargs = {
            'root': root,
            'mode': mode,
            'seed': seed,
            'size': tile_size,
            'num_train': num_train,
            'num_val': num_val,
            'latitudes': latitudes,
            'long_tail': long_tail,
            **kwargs,
        }

    def prepare_data(self) -> None:
        """Generate the corpus once (on one process) before the ranks set up."""
        make_mini_corpus(
            self.kwargs['root'],
            self.kwargs['seed'],
            self.kwargs['size'],
            self.kwargs['num_train'],
            self.kwargs['num_val'],
            latitudes=self.kwargs['latitudes'],
            long_tail=self.kwargs['long_tail'],
        )


__all__ = ('EarthSynthMiniDataModule',)
