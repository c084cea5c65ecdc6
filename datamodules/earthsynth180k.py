# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""EarthSynth-180K and EarthSynthMini datamodules."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, cast

import kornia.augmentation as K
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn
from torch.utils.data import (
    DataLoader,
    Dataset,
    RandomSampler,
    Subset,
    WeightedRandomSampler,
    random_split,
)

from torchgeo_earthsynth.compat import DatasetNotFoundError, NonGeoDataModule, batch_for_trainer
from torchgeo_earthsynth.datasets import EarthSynth180K
from torchgeo_earthsynth.datasets.earthsynth180k import plot_sample
from torchgeo_earthsynth.vocabulary import (
    BACKGROUND,
    NUM_CLASSES,
    ids_from_prompt,
    present_ids,
    prompt_from_ids,
)

from .epoch_order import EpochOrder, ResumableBatchSampler


def sample_class_ids(dataset: EarthSynth180K) -> list[list[int]]:
    """The foreground class ids of every sample of a dataset, read cheaply.

    Ids come from the record's template prompt when the JSONL has one (no image is decoded),
    from the class of a single-category record, or else from the mask PNG. Background is left
    out unless a sample holds nothing else.

    Args:
        dataset: an :class:`~torchgeo_earthsynth.datasets.EarthSynth180K` (or subclass).

    Returns:
        One sorted list of ids per sample, in dataset order.

    .. versionadded:: 0.1
    """
    result = []
    for record in dataset.records:
        ids: list[int] | None = None
        if record.category is not None:
            ids = [record.category]
        elif record.prompt is not None:
            try:
                ids = ids_from_prompt(record.prompt)
            except ValueError:  # free-text prompt: fall back to the mask
                ids = None
        if ids is None:
            ids = present_ids(dataset._read_mask(record.mask))
        ids = [i for i in ids if i != BACKGROUND] or [BACKGROUND]
        result.append(ids)
    return result


def balanced_weights(
    class_ids: Sequence[Sequence[int]], reduction: Literal['max', 'mean'] = 'max'
) -> Tensor:
    """Per-sample weights from inverse class frequency, for a ``WeightedRandomSampler``.

    The frequency of a class is the number of samples that contain it (presence, not pixel
    counts: prompts give presence without decoding masks). A sample's weight is the ``max``
    (default: a sample is as likely as its rarest class) or ``mean`` of ``1 / frequency`` over
    its classes.

    Args:
        class_ids: the class ids of each sample, e.g. from :func:`sample_class_ids`.
        reduction: how to combine a sample's per-class weights.

    Returns:
        float64 weights, one per sample.

    Raises:
        ValueError: if a sample has no class id or ``reduction`` is unknown.

    .. versionadded:: 0.1
    """
    counts = Counter(i for ids in class_ids for i in set(ids))
    weights = []
    for index, ids in enumerate(class_ids):
        if not ids:
            raise ValueError(f'sample {index} has no class id; expected at least one')
        inverse = [1.0 / counts[i] for i in set(ids)]
        match reduction:
            case 'max':
                weights.append(max(inverse))
            case 'mean':
                weights.append(sum(inverse) / len(inverse))
            case _:
                raise ValueError(f"reduction must be 'max' or 'mean', got {reduction!r}")
    return torch.tensor(weights, dtype=torch.float64)


class RefreshLabels(nn.Module):
    """Recompute ``categories`` (and prompts) of a batch from its masks after resize or crop.

    A crop or a coarse resize can remove classes from a mask; the multi-hot ``categories``
    then no longer match it. Samples whose class set changed get a template prompt rebuilt
    from the new mask; the prompts of the others (possibly free text) are kept.

    .. versionadded:: 0.1
    """

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Refresh the labels of a batch.

        Args:
            batch: a batch dict with ``mask`` [B, H, W] and optionally ``categories`` [B, 67]
                and ``prompt`` (list of str).

        Returns:
            The same dict, with ``categories`` (and changed samples' ``prompt``) updated.
        """
        mask = batch['mask']
        present = torch.zeros(mask.shape[0], NUM_CLASSES, device=mask.device)
        present.scatter_(1, mask.reshape(mask.shape[0], -1).long(), 1.0)
        old = batch.get('categories')
        batch['categories'] = present
        if old is None or 'prompt' not in batch:
            return batch
        changed = (old.to(present.device) != present).any(dim=1).tolist()
        if any(changed):
            prompts = list(batch['prompt'])
            for i in (i for i, c in enumerate(changed) if c):
                prompts[i] = prompt_from_ids(present[i].nonzero().flatten().tolist())
            batch['prompt'] = prompts
        return batch


class EarthSynth180KDataModule(NonGeoDataModule):
    """LightningDataModule for the EarthSynth-180K corpus.

    Uses the ``train`` and ``val`` splits of
    :class:`~torchgeo_earthsynth.datasets.EarthSynth180K`; testing and prediction use
    ``val``. A corpus without ``val/`` (the released one may have none) gets a fixed random
    ``val_split_pct`` share of ``train`` records as ``val``. Batches are the default-collated
    sample dicts: ``image`` [B, 3, H, W], ``mask`` [B, H, W], ``categories`` [B, 67],
    ``prompt`` and ``source`` lists.

    On the device, after transfer, in this order:

    1. ``cf_comp`` (training batches only), on the raw 0..255 batch at its native size;
    2. ``train_aug`` when training, else ``aug``: resize (or random crop when training and
       center crop otherwise, if ``crop``) to ``size`` with masks resized NEAREST, random
       flips (training, if ``flip``), categories/prompts refreshed when ``size`` is set,
       then normalisation.

    ``normalize=True`` (default) divides images by 255, as every TorchGeo datamodule does, so
    TorchGeo's :class:`~torchgeo.trainers.SemanticSegmentationTask` trains on it unchanged.
    ``normalize=False`` leaves images in 0..255, as
    :class:`~torchgeo_earthsynth.lightning_modules.EarthSynthControlNet` expects; then
    :attr:`mean` is 0 and :attr:`std` 1, so tasks that denormalise for plots still get 0..255.

    ``balanced=True`` draws training samples with replacement with a
    :class:`~torch.utils.data.WeightedRandomSampler` whose weights come from inverse class
    frequency (:func:`balanced_weights` over :func:`sample_class_ids`: from the JSONL prompts
    when present, no mask decoded), so scenes with rare classes are seen more often.

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
        val_split_pct: float = 0.1,
        mode: Literal['full', 'category', 'both'] = 'full',
        root: str | Path = 'data',
        download: bool = False,
        strict: bool = True,
        **kwargs: Any,
    ) -> None:
        """Initialize a new EarthSynth180KDataModule instance.

        Args:
            batch_size: size of each mini-batch.
            num_workers: number of workers for parallel data loading.
            size: side in pixels that batches are resized (or cropped) to; None keeps the
                dataset's size.
            crop: crop to ``size`` (random in training, central otherwise) instead of
                resizing; smaller training batches are padded (mask with background).
            normalize: divide images by 255 (TorchGeo's convention); False keeps 0..255.
            flip: random horizontal and vertical flips of training batches.
            balanced: category-balanced sampling of training samples (with replacement).
            cf_comp: batch-level module (e.g.
                :class:`~torchgeo_earthsynth.transforms.cf_comp.CounterfactualComposition`)
                applied to raw training batches on the device before ``train_aug``.
            val_split_pct: share of ``train`` held out for validation when the corpus has
                no ``val/`` folder (a fixed random split of records).
            mode: ``full`` scenes, single-``category`` samples, or ``both``.
            root: root directory of the corpus.
            download: if True, download the corpus when missing.
            strict: raise on bad records; if False, skip and count them.
            **kwargs: additional keyword arguments passed to
                :class:`~torchgeo_earthsynth.datasets.EarthSynth180K`.

        Raises:
            ValueError: if ``size`` is not positive or ``val_split_pct`` not in (0, 1).
        """
        super().__init__(
            EarthSynth180K,
            batch_size,
            num_workers,
            root=root,
            mode=mode,
            download=download,
            strict=strict,
            **kwargs,
        )
        if size is not None and size <= 0:
            raise ValueError(f'size must be a positive number of pixels or None, got {size}')
        if not 0 < val_split_pct < 1:
            raise ValueError(f'val_split_pct must be in (0, 1), got {val_split_pct}')
        self.size = size
        self.val_split_pct = val_split_pct
        self.crop = crop
        self.normalize = normalize
        self.flip = flip
        self.balanced = balanced
        self.cf_comp = cf_comp
        #: The training epoch's order and position, checkpointed (see :meth:`state_dict`).
        self.epoch_order = EpochOrder()
        if not normalize:
            self.mean = torch.tensor(0.0)
            self.std = torch.tensor(1.0)
        self.aug = self._augmentations(train=False)
        self.train_aug = self._augmentations(train=True)

    def _augmentations(self, train: bool) -> nn.Module:
        """Build the batch pipeline: geometry, label refresh, normalisation."""
        geometry: list[K.AugmentationBase2D] = []
        if self.size is not None:
            side = (self.size, self.size)
            if not self.crop:
                geometry.append(K.Resize(side))
            elif train:
                geometry.append(K.RandomCrop(side, pad_if_needed=True))
            else:
                geometry.append(K.CenterCrop(side))
        if train and self.flip:
            geometry += [K.RandomHorizontalFlip(), K.RandomVerticalFlip()]
        steps: list[nn.Module] = []
        if geometry:
            steps.append(K.AugmentationSequential(*geometry, data_keys=None, keepdim=True))
        if self.size is not None:
            steps.append(RefreshLabels())
        if self.normalize:
            norm = K.Normalize(mean=self.mean, std=self.std)
            steps.append(K.AugmentationSequential(norm, data_keys=None, keepdim=True))
        # An empty nn.Sequential is falsy, which TorchGeo reads as "no aug defined".
        return nn.Sequential(*steps) if steps else nn.Identity()

    def setup(self, stage: str) -> None:
        """Set up datasets.

        Args:
            stage: either 'fit', 'validate', 'test', or 'predict'.
        """
        train, val = self._train_val(need_train=stage == 'fit')
        match stage:
            case 'fit':
                self.train_dataset, self.val_dataset = train, val
            case 'validate':
                self.val_dataset = val
            case 'test':
                self.test_dataset = val
            case 'predict':
                self.predict_dataset = val

    def _dataset(self, split: Literal['train', 'val'], **overrides: Any) -> EarthSynth180K:
        dataset_class = cast(type[EarthSynth180K], self.dataset_class)
        return dataset_class(split=split, **{**self.kwargs, **overrides})

    def _train_val(
        self, need_train: bool
    ) -> tuple[Dataset[dict[str, Any]] | None, Dataset[dict[str, Any]]]:
        """The train (if needed) and val datasets; val split off train if there is no ``val/``."""
        train = self._dataset('train') if need_train else None
        # Any download happened in prepare_data or just above: never fetch again for val.
        overrides = {'download': False} if 'download' in self.kwargs else {}
        try:
            return train, self._dataset('val', **overrides)
        except DatasetNotFoundError:
            pass
        if train is None:
            train = self._dataset('train')
        # The same seed on every rank, so DDP processes agree on the split.
        generator = torch.Generator().manual_seed(0)
        fractions = [1 - self.val_split_pct, self.val_split_pct]
        train_part, val_part = random_split(train, fractions, generator)
        return (train_part if need_train else None), val_part

    def balanced_sampler(self) -> WeightedRandomSampler | None:
        """The category-balanced sampler of the training set, if ``balanced``.

        Returns:
            A sampler drawing ``len(train_dataset)`` indices with replacement, or None.

        Raises:
            ValueError: if the training dataset is neither an EarthSynth180K nor a Subset of
                one.
        """
        if not self.balanced:
            return None
        dataset = self._valid_attribute('train_dataset', 'dataset')
        indices = None
        if isinstance(dataset, Subset):  # val split off train: weights of the train part
            indices = list(dataset.indices)
            dataset = dataset.dataset
        if not isinstance(dataset, EarthSynth180K):
            raise ValueError(
                'balanced=True needs an EarthSynth180K train dataset (its records), '
                f'got {type(dataset).__name__}'
            )
        class_ids = sample_class_ids(dataset)
        if indices is not None:
            class_ids = [class_ids[i] for i in indices]
        weights = balanced_weights(class_ids)
        return WeightedRandomSampler(weights.tolist(), num_samples=len(weights), replacement=True)

    def _dataloader_factory(self, split: str) -> DataLoader[dict[str, Tensor]]:
        """Build the DataLoader of a split; training's is shuffled (or balanced) and resumable.

        Args:
            split: either 'train', 'val', 'test', or 'predict'.

        Returns:
            The DataLoader.
        """
        if split != 'train':
            return super()._dataloader_factory(split)
        dataset = self._valid_attribute('train_dataset', 'dataset')
        balanced = self.balanced_sampler()
        sampler = RandomSampler(dataset) if balanced is None else balanced
        batch_size = self._valid_attribute('train_batch_size', 'batch_size')
        return DataLoader(
            dataset=dataset,
            batch_sampler=ResumableBatchSampler(sampler, batch_size, True, self.epoch_order),
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            persistent_workers=self.num_workers > 0,
        )

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps so a resumed run continues this one exactly.

        Returns:
            The training epoch's order and position, and CF-Comp's class frequencies.
        """
        return {
            'epoch_order': self.epoch_order.state_dict(),
            'cf_comp': None if self.cf_comp is None else self.cf_comp.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from a checkpoint's :meth:`state_dict`.

        Args:
            state_dict: from :meth:`state_dict` (absent keys: older checkpoints).
        """
        if 'epoch_order' in state_dict:
            self.epoch_order.load_state_dict(state_dict['epoch_order'])
        if self.cf_comp is not None and state_dict.get('cf_comp') is not None:
            self.cf_comp.load_state_dict(state_dict['cf_comp'])

    def on_after_batch_transfer(
        self, batch: dict[str, Tensor], dataloader_idx: int
    ) -> dict[str, Tensor]:
        """Apply ``cf_comp`` to training batches, then the split's augmentations.

        Args:
            batch: a batch on the device.
            dataloader_idx: the index of the dataloader the batch belongs to.

        Returns:
            The augmented batch.
        """
        training = self.trainer is not None and self.trainer.training
        if training:
            self.epoch_order.step()
        if self.cf_comp is not None and training:
            # Datamodule attributes are not moved by Lightning.
            self.cf_comp.to(batch['image'].device)
            batch = self.cf_comp(batch)
        batch = batch_for_trainer(batch, self.trainer)
        return super().on_after_batch_transfer(batch, dataloader_idx)

    def plot(self, *args: Any, **kwargs: Any) -> Figure:
        """Plot a sample with the dataset's ``plot`` (works before ``setup`` too).

        Args:
            *args: arguments passed to
                :meth:`~torchgeo_earthsynth.datasets.EarthSynth180K.plot`.
            **kwargs: keyword arguments passed to it.

        Returns:
            A matplotlib Figure with the image, mask (and prediction) and prompt.
        """
        fig = super().plot(*args, **kwargs)
        return fig if fig is not None else plot_sample(*args, **kwargs)
