# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""EuroSAT's encoding over the mini corpus: 13 Sentinel-2 bands x 10000, EuroSAT's labels."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from torchgeo_earthsynth.compat import NonGeoDataModule
from torchgeo_earthsynth.datasets import EarthSynthMiniMultispectral
from torchgeo_earthsynth.encodings.registry import ENCODINGS
from torchgeo_earthsynth.transforms.synthetic_augmentation import SyntheticAugmentation
from torchgeo_earthsynth.transforms.synthetic_callback import attach
from torchgeo_earthsynth.vocabulary import VOCABULARY

from .downstream import dominant_class

__all__ = ('EUROSAT_CLASS_OF', 'MiniEuroSAT', 'MiniEuroSATDataModule')

_LOG = logging.getLogger(__name__)
_EUROSAT: Final = ENCODINGS['EuroSAT']
#: The mini corpus's dominant classes (vocabulary names) as EuroSAT's classes.
EUROSAT_CLASS_OF: Final[dict[str, str]] = {
    'agriculture land': 'AnnualCrop',
    'forest land': 'Forest',
    'road': 'Highway',
    'building': 'Residential',
    'water': 'SeaLake',
}


class MiniEuroSAT(Dataset[dict[str, Tensor]]):
    """The mini corpus's 13-band scenes as EuroSAT samples: its bands, scale and labels.

    ``image`` float32 [C, H, W] in EuroSAT's scale (reflectance x 10000) and band order
    (``bands``, TorchGeo's names: B8A last by default); ``label`` the EuroSAT value of the
    scene's dominant class (:data:`EUROSAT_CLASS_OF`). Scenes whose dominant class has no
    EuroSAT counterpart are skipped and counted (:attr:`skipped`).

    .. versionadded:: 0.5
    """

    def __init__(self, scenes: EarthSynthMiniMultispectral, bands: Sequence[str]) -> None:
        """Initialize a new MiniEuroSAT instance.

        Args:
            scenes: the mini corpus's Sentinel-2 scenes (``variant='sentinel2'``).
            bands: EuroSAT band names to load, in order.
        """
        self.scenes, self.bands = scenes, tuple(bands)
        self.band_indices = list(scenes.bands.indices(self.bands))
        self.rows: list[tuple[int, int]] = []
        for index in range(len(scenes)):
            dominant = dominant_class(scenes.scenes[index]['mask'])
            name = EUROSAT_CLASS_OF.get(VOCABULARY[dominant]) if dominant is not None else None
            if name is not None:
                self.rows.append((index, _EUROSAT.values[_EUROSAT.classes.index(name)]))
        self.skipped = len(scenes) - len(self.rows)
        if self.skipped:
            _LOG.info('MiniEuroSAT: %d scenes without a EuroSAT class skipped', self.skipped)

    def __len__(self) -> int:
        """The number of scenes kept."""
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """One scene as ``image`` and ``label``."""
        scene, label = self.rows[index]
        image = self.scenes[scene]['image'][self.band_indices] * 10000
        return {'image': image, 'label': torch.tensor(label)}


class MiniEuroSATDataModule(NonGeoDataModule):
    """A EuroSAT-layout classification datamodule over the mini corpus, for data efficiency.

    Batches are EuroSAT's: ``image`` [B, C, H, W] in reflectance x 10000 (normalised by
    10000 after augmentation), ``label`` EuroSAT's class values, all 10 classes counted
    (:attr:`classes`), 5 of them present. The corpus's ``val`` split is halved into
    validation and test scenes. With ``synthetic`` set, the augmentation is bound to
    EuroSAT's registry entry (its classes, bands and scale) and put in ``train_aug``: a
    multispectral generator whose bands cover ``bands`` fills batches in their order.

    .. versionadded:: 0.5
    """

    classes: ClassVar[tuple[str, ...]] = _EUROSAT.classes
    mean = torch.tensor(0.0)
    std = torch.tensor(10000.0)

    def __init__(
        self,
        batch_size: int = 16,
        num_workers: int = 0,
        root: str | Path | None = None,
        bands: Sequence[str] = _EUROSAT.bands,
        synthetic: SyntheticAugmentation | None = None,
        seed: int = 0,
        tile_size: int = 32,
        num_train: int = 256,
        num_val: int = 64,
    ) -> None:
        """Initialize a new MiniEuroSATDataModule instance.

        Args:
            batch_size: size of each mini-batch.
            num_workers: number of workers for parallel data loading.
            root: parent folder of the cached mini corpus (default: the cache folder).
            bands: EuroSAT band names to load (as ``EuroSATDataModule(bands=...)``).
            synthetic: synthetic augmentation of training batches (classification).
            seed: random seed of the corpus.
            tile_size: tile size in pixels.
            num_train: number of training scenes.
            num_val: number of held-out scenes (first half validation, second half test).
        """
        super().__init__(EarthSynthMiniMultispectral, batch_size, num_workers, bands=bands)
        self.corpus: dict[str, Any] = {
            'root': root,
            'seed': seed,
            'size': tile_size,
            'num_train': num_train,
            'num_val': num_val,
        }
        self.synthetic = synthetic
        if synthetic is not None:
            synthetic.bind(dataset='EuroSAT')
            attach(self, synthetic)

    def _split(self, split: Literal['train', 'val']) -> MiniEuroSAT:
        scenes = EarthSynthMiniMultispectral(split=split, variant='sentinel2', **self.corpus)
        return MiniEuroSAT(scenes, self.kwargs['bands'])

    def setup(self, stage: str) -> None:
        """Set up the train, validation (first half of ``val``) and test datasets.

        Args:
            stage: ``fit``, ``validate``, ``test`` or ``predict``.
        """
        if stage == 'fit':
            self.train_dataset = self._split('train')
        held_out = self._split('val')
        half = len(held_out) // 2
        self.val_dataset = Subset(held_out, range(half))
        self.test_dataset = Subset(held_out, range(half, len(held_out)))
