# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Small downstream datamodules over an EarthSynth corpus, for synthetic-augmentation runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Final

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from torchgeo_earthsynth.compat import NonGeoDataModule
from torchgeo_earthsynth.datasets import EarthSynth180K, make_mini_corpus
from torchgeo_earthsynth.encodings.label_maps import label_map
from torchgeo_earthsynth.transforms.synthetic_augmentation import SyntheticAugmentation
from torchgeo_earthsynth.transforms.synthetic_callback import attach
from torchgeo_earthsynth.vocabulary import (
    BACKGROUND,
    NUM_CLASSES,
    PALETTE,
    class_histogram,
)

#: LoveDA's classes (without ``no-data``), the segmentation datamodule's classes.
SEGMENTATION_CLASSES: Final[tuple[str, ...]] = (
    'background',
    'building',
    'road',
    'water',
    'barren',
    'forest',
    'agriculture',
)
#: Classes of the classification datamodule (vocabulary names).
CLASSIFICATION_CLASSES: Final[tuple[str, ...]] = (
    'agriculture land',
    'forest land',
    'water',
    'building',
    'road',
)


def reverse_map(lut: Tensor, fill: int = 0) -> Tensor:
    """Vocabulary id -> downstream class index, the inverse of a label map.

    Args:
        lut: int64 [C] vocabulary id per downstream class
            (:func:`~torchgeo_earthsynth.encodings.label_map`).
        fill: index of vocabulary ids no downstream class maps to.

    Returns:
        int64 [67]; where several classes share an id, the first one wins.

    .. versionadded:: 0.1
    """
    inverse = torch.full((NUM_CLASSES,), fill, dtype=torch.long)
    for index in reversed(range(len(lut))):
        inverse[lut[index]] = index
    return inverse


class _ToSegmentation:
    """Sample transform: keep ``image``, map the vocabulary mask to downstream class ids."""

    def __init__(self, inverse: Tensor) -> None:
        self.inverse = inverse

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        return {'image': sample['image'], 'mask': self.inverse[sample['mask']]}


def dominant_class(mask: Tensor) -> int | None:
    """The vocabulary id covering most non-background pixels of a mask, or None if none.

    Args:
        mask: int [H, W] vocabulary ids.

    Returns:
        The id (ties go to the smaller id), or None for an all-background mask.

    .. versionadded:: 0.1
    """
    counts = class_histogram(mask[None])[0]
    counts[BACKGROUND] = 0
    return int(counts.argmax()) if int(counts.max()) > 0 else None


class _Classification(Dataset[dict[str, Tensor]]):
    """The scenes of a corpus whose dominant class is one of ``classes``, as image + label."""

    def __init__(self, corpus: EarthSynth180K, lut: Tensor) -> None:
        self.corpus = corpus
        index_of = {int(v): i for i, v in reversed(list(enumerate(lut.tolist())))}
        self.items: list[tuple[int, int]] = []
        for i in range(len(corpus)):
            dominant = dominant_class(corpus[i]['mask'])
            if dominant in index_of:
                self.items.append((i, index_of[dominant]))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        i, label = self.items[index]
        return {'image': self.corpus[i]['image'], 'label': torch.tensor(label)}


class _MiniDownstreamDataModule(NonGeoDataModule):
    """Shared set-up: corpus root (or the generated mini corpus), splits, synthetic slot."""

    classes: ClassVar[tuple[str, ...]]
    label_map_dataset: ClassVar[str | None] = None

    def __init__(
        self,
        batch_size: int = 16,
        num_workers: int = 0,
        root: str | Path | None = None,
        synthetic: SyntheticAugmentation | None = None,
        seed: int = 0,
        tile_size: int = 64,
        num_train: int = 256,
        num_val: int = 64,
        test_share: float = 0.5,
        long_tail: bool = False,
    ) -> None:
        super().__init__(EarthSynth180K, batch_size, num_workers)
        if not 0.0 < test_share < 1.0:
            raise ValueError(f'test_share must be in (0, 1), got {test_share!r}')
        self.root = root
        self.mini = (seed, tile_size, num_train, num_val)
        self.long_tail = long_tail
        self.test_share = test_share
        self.lut = label_map(self.classes, dataset=self.label_map_dataset)
        self.synthetic = synthetic
        if synthetic is not None:
            synthetic.bind(self.classes, names=self.label_map_dataset)
            attach(self, synthetic)

    def corpus_root(self) -> Path:
        """The corpus folder: ``root``, or the mini corpus (generated once if needed)."""
        if self.root is not None:
            return Path(self.root)
        return make_mini_corpus(None, *self.mini, long_tail=self.long_tail)

    def prepare_data(self) -> None:
        """Generate the mini corpus once (on one process) when no ``root`` is given."""
        self.corpus_root()

    def _dataset(self, split: str) -> Dataset[dict[str, Tensor]]:
        raise NotImplementedError

    def held_out_indices(self, count: int) -> tuple[list[int], list[int]]:
        """Split the corpus' held-out scenes into validation and test indices.

        The split is a fixed permutation (seed 0, whatever the run's seed), so every run of
        an experiment tests on the same scenes, and no scene is in both parts.

        Args:
            count: number of held-out samples.

        Returns:
            Sorted validation indices and sorted test indices (``test_share`` of them,
            at least one of each when ``count >= 2``).

        Raises:
            ValueError: if there are fewer than 2 held-out samples to split.
        """
        if count < 2:
            raise ValueError(
                f'{type(self).__name__}: {count} held-out sample(s) in the corpus val split; '
                'at least 2 are needed to split them into validation and test'
            )
        num_test = min(count - 1, max(1, round(self.test_share * count)))
        order = torch.randperm(count, generator=torch.Generator().manual_seed(0)).tolist()
        return sorted(order[num_test:]), sorted(order[:num_test])

    def _held_out(self, part: str) -> Dataset[dict[str, Tensor]]:
        dataset = self._dataset('val')
        val, test = self.held_out_indices(len(dataset))  # type: ignore[arg-type]
        return Subset(dataset, val if part == 'val' else test)

    def setup(self, stage: str) -> None:
        """Set up the datasets: ``train`` for fitting; validation and test from ``val``.

        The corpus' ``val`` scenes are split once (:meth:`held_out_indices`) into a
        validation part (model selection, LR schedule) and a disjoint test part that no
        training or selection touches.

        Args:
            stage: either 'fit', 'validate', 'test', or 'predict'.
        """
        if stage == 'fit':
            self.train_dataset = self._dataset('train')
        if stage in ('fit', 'validate'):
            self.val_dataset = self._held_out('val')
        if stage == 'test':
            self.test_dataset = self._held_out('test')
        if stage == 'predict':
            self.predict_dataset = self._held_out('test')


class MiniSegmentationDataModule(_MiniDownstreamDataModule):
    """LoveDA-like semantic segmentation over an EarthSynth corpus (the mini one by default).

    Samples are ``image`` float32 [3, H, W] in 0..255 and ``mask`` int64 [H, W] with indices
    of :attr:`classes`, LoveDA's classes without no-data. The corpus' vocabulary ids map back
    through :data:`~torchgeo_earthsynth.encodings.LABEL_MAPS` ``['LoveDA']`` (building 8,
    road 4, water 6, barren land 10, forest land 9, agriculture land 7); every other id
    (grass, tree, pavement, vehicles...) becomes background. Batches are normalised by
    TorchGeo's default ``aug`` (images / 255).

    With ``synthetic`` set, the augmentation is bound to :attr:`classes` (LoveDA's label map)
    and put in ``train_aug`` ahead of the normal ``aug``.

    .. versionadded:: 0.1
    """

    classes: ClassVar[tuple[str, ...]] = SEGMENTATION_CLASSES
    label_map_dataset: ClassVar[str | None] = 'LoveDA'

    def __init__(
        self,
        batch_size: int = 16,
        num_workers: int = 0,
        root: str | Path | None = None,
        synthetic: SyntheticAugmentation | None = None,
        seed: int = 0,
        tile_size: int = 64,
        num_train: int = 256,
        num_val: int = 64,
        test_share: float = 0.5,
        long_tail: bool = False,
    ) -> None:
        """Initialize a new MiniSegmentationDataModule instance.

        Args:
            batch_size: size of each mini-batch.
            num_workers: number of workers for parallel data loading.
            root: an EarthSynth-180K-layout corpus; None generates the mini corpus.
            synthetic: synthetic augmentation of training batches (``task='segmentation'``).
            seed: random seed of the mini corpus.
            tile_size: tile size of the mini corpus in pixels.
            num_train: training scenes of the mini corpus.
            num_val: held-out scenes of the mini corpus (split into validation and test).
            test_share: share of the held-out scenes kept for the test split.
            long_tail: the long-tailed mini corpus (rare classes in few scenes).

        Raises:
            ValueError: if ``synthetic`` is bound to other classes, or ``test_share`` is
                not in (0, 1).
        """
        super().__init__(
            batch_size,
            num_workers,
            root,
            synthetic,
            seed,
            tile_size,
            num_train,
            num_val,
            test_share,
            long_tail,
        )
        #: Vocabulary id -> index of :attr:`classes` (background for ids outside them).
        self.reverse = reverse_map(self.lut, fill=0)

    def _dataset(self, split: str) -> Dataset[dict[str, Tensor]]:
        return EarthSynth180K(
            self.corpus_root(),
            split=split,  # type: ignore[arg-type]
            transforms=_ToSegmentation(self.reverse),
        )

    def plot(self, sample: dict[str, Tensor], suptitle: str | None = None) -> Figure:
        """Plot image, mask (and prediction) in the vocabulary's colours.

        Args:
            sample: ``image`` [3, H, W] in 0..255, ``mask`` [H, W], optional ``prediction``.
            suptitle: optional title.

        Returns:
            A matplotlib Figure.
        """
        colours = PALETTE[self.lut.numpy()]
        panels = [('Mask', sample['mask'])]
        if 'prediction' in sample:
            panels.append(('Prediction', sample['prediction']))
        fig, axs = plt.subplots(1, 1 + len(panels), figsize=(4 * (1 + len(panels)), 4))
        axs[0].imshow(sample['image'].cpu().permute(1, 2, 0).clamp(0, 255).numpy() / 255)
        axs[0].set_title('Image')
        for ax, (title, mask) in zip(axs[1:], panels):
            ax.imshow(colours[mask.cpu().numpy().clip(0, len(colours) - 1)])
            ax.set_title(title)
        for ax in axs:
            ax.axis('off')
        handles = [Patch(color=c / 255, label=n) for c, n in zip(colours, self.classes)]
        axs[-1].legend(handles=handles, loc='center left', bbox_to_anchor=(1.0, 0.5))
        if suptitle is not None:
            fig.suptitle(suptitle)
        return fig


class MiniClassificationDataModule(_MiniDownstreamDataModule):
    """Scene classification over an EarthSynth corpus (the mini one by default).

    The label of a scene is its dominant class: the vocabulary class covering most of its
    non-background pixels (:func:`dominant_class`). Scenes whose dominant class is one of
    :attr:`classes` are kept, with that class's index as ``label``; the others (e.g. scenes
    mostly of grass or pavement) are left out. Samples are ``image`` float32 [3, H, W] in
    0..255 and ``label`` int64. Finding labels decodes every mask once at set-up, which suits
    small corpora. Batches are normalised by TorchGeo's default ``aug`` (images / 255).

    With ``synthetic`` set, the augmentation is bound to :attr:`classes` and put in
    ``train_aug`` ahead of the normal ``aug``; ``class_rule='dominant'`` makes bank samples
    follow the same labelling.

    .. versionadded:: 0.1
    """

    classes: ClassVar[tuple[str, ...]] = CLASSIFICATION_CLASSES

    def __init__(
        self,
        batch_size: int = 16,
        num_workers: int = 0,
        root: str | Path | None = None,
        synthetic: SyntheticAugmentation | None = None,
        seed: int = 0,
        tile_size: int = 64,
        num_train: int = 256,
        num_val: int = 64,
        test_share: float = 0.5,
        long_tail: bool = False,
    ) -> None:
        """Initialize a new MiniClassificationDataModule instance.

        Args:
            batch_size: size of each mini-batch.
            num_workers: number of workers for parallel data loading.
            root: an EarthSynth-180K-layout corpus; None generates the mini corpus.
            synthetic: synthetic augmentation of training batches
                (``task='classification'``).
            seed: random seed of the mini corpus.
            tile_size: tile size of the mini corpus in pixels.
            num_train: training scenes of the mini corpus.
            num_val: held-out scenes of the mini corpus (split into validation and test).
            test_share: share of the held-out scenes kept for the test split.
            long_tail: the long-tailed mini corpus (rare classes in few scenes).

        Raises:
            ValueError: if ``synthetic`` is bound to other classes, or ``test_share`` is
                not in (0, 1).
        """
        super().__init__(
            batch_size,
            num_workers,
            root,
            synthetic,
            seed,
            tile_size,
            num_train,
            num_val,
            test_share,
            long_tail,
        )

    def _dataset(self, split: str) -> Dataset[dict[str, Tensor]]:
        corpus = EarthSynth180K(self.corpus_root(), split=split)  # type: ignore[arg-type]
        return _Classification(corpus, self.lut)

    def plot(self, sample: dict[str, Tensor], suptitle: str | None = None) -> Figure:
        """Plot the image with its label (and prediction).

        Args:
            sample: ``image`` [3, H, W] in 0..255, ``label``, optional ``prediction``.
            suptitle: optional title.

        Returns:
            A matplotlib Figure.
        """
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.imshow(sample['image'].cpu().permute(1, 2, 0).clamp(0, 255).numpy() / 255)
        ax.axis('off')
        title = f'Label: {self.classes[int(sample["label"])]}'
        if 'prediction' in sample:
            title += f'\nPrediction: {self.classes[int(np.asarray(sample["prediction"]))]}'
        ax.set_title(title)
        if suptitle is not None:
            fig.suptitle(suptitle)
        return fig


__all__ = (
    'CLASSIFICATION_CLASSES',
    'SEGMENTATION_CLASSES',
    'MiniClassificationDataModule',
    'MiniSegmentationDataModule',
    'dominant_class',
    'reverse_map',
)
