# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Putting a SyntheticAugmentation to work: a datamodule's ``train_aug`` slot or a callback."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from .synthetic_rows import REAL

if TYPE_CHECKING:
    from .synthetic_augmentation import SyntheticAugmentation


def attach(datamodule: Any, augmentation: SyntheticAugmentation) -> None:
    """Put ``augmentation`` into a TorchGeo datamodule's ``train_aug`` slot.

    The datamodule's own training augmentation (``train_aug``, else ``aug``) becomes the
    augmentation's ``then``, so batches are augmented raw and then processed exactly as
    before. Attaching twice does nothing. The augmentation is bound to the datamodule's
    dataset when that is registered, and its bands and pixel scale are checked
    (:meth:`SyntheticAugmentation.fit_to`).

    Args:
        datamodule: a TorchGeo ``BaseDataModule`` (anything with ``aug``/``train_aug``).
        augmentation: the synthetic augmentation.

    Raises:
        ValueError: if the datamodule's images do not suit synthetic RGB samples.

    .. versionadded:: 0.1
    """
    if datamodule.train_aug is augmentation:
        return
    augmentation.fit_to(datamodule)
    if augmentation.then is None:
        own = datamodule.train_aug if datamodule.train_aug is not None else datamodule.aug
        augmentation.then = own
    datamodule.train_aug = augmentation


class SyntheticAugmentationCallback(Callback):
    """Apply a :class:`SyntheticAugmentation` to the training batches of any LightningModule.

    In ``on_train_batch_start`` the batch dict is modified in place, so it works with any
    LightningModule and datamodule, with these limits:

    * batches must be dicts (as TorchGeo's); other batch types raise ``ValueError``;
    * the batch has already been through the datamodule's augmentation, so images are
      normalised: give the callback that ``mean`` and ``std`` (TorchGeo's default is 0 and
      255); synthetic images are normalised with them, and real rows are left untouched;
    * the augmentation's ``then`` is not applied, and geometric augmentations of the
      datamodule (flips, crops) have already happened: synthetic rows do not get them.

    Prefer :func:`attach` (the ``train_aug`` slot) with TorchGeo datamodules.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        augmentation: SyntheticAugmentation,
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 1.0,
    ) -> None:
        """Initialize a new SyntheticAugmentationCallback instance.

        Args:
            augmentation: the synthetic augmentation to apply.
            mean: mean the datamodule subtracted from images (scalar or per channel).
            std: std it divided them by (scalar or per channel).
        """
        super().__init__()
        self.augmentation = augmentation
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Augment the training batch in place.

        Args:
            trainer: the trainer.
            pl_module: the LightningModule being trained.
            batch: the batch (a dict).
            batch_idx: index of the batch.

        Raises:
            ValueError: if the batch is not a dict.
        """
        if not isinstance(batch, dict):
            raise ValueError(
                'SyntheticAugmentationCallback works on dict batches only, got '
                f'{type(batch).__name__}'
            )
        image = batch['image']
        mean, std = self.mean.to(image), self.std.to(image)
        raw = dict(batch)
        raw['image'] = image * std + mean
        out, plan = self.augmentation.augment(raw)
        normalised = (out['image'] - mean) / std
        real = plan.origin == REAL
        # keep the real rows bit-exact rather than round-tripped through (x * std + mean)
        normalised[real] = image[plan.source_index[real]]
        out['image'] = normalised
        batch.clear()
        batch.update(out)


__all__ = ('SyntheticAugmentationCallback', 'attach')
