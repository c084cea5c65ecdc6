# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Putting a SyntheticAugmentation to work: a datamodule's ``train_aug`` slot or a callback."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from .synthetic_rows import REAL

if TYPE_CHECKING:
    from .synthetic_augmentation import SyntheticAugmentation


class BatchAugmentation(Protocol):
    """A batch transform for the ``train_aug`` slot, with the augmentation it runs after."""

    then: Callable[[dict[str, Any]], dict[str, Any]] | None

    def __call__(self, batch: dict[str, Any]) -> Any:
        """Augment one raw batch."""


def attach(datamodule: Any, augmentation: BatchAugmentation) -> None:
    """Put ``augmentation`` into a TorchGeo datamodule's ``train_aug`` slot.

    The datamodule's own training augmentation (``train_aug``, else ``aug``) becomes the
    augmentation's ``then``, so batches are augmented raw and then processed exactly as
    before. Attaching twice does nothing. A :class:`SyntheticAugmentation` is bound to the
    datamodule's dataset when that is registered, and its bands and pixel scale are checked
    (:meth:`SyntheticAugmentation.fit_to`).

    Args:
        datamodule: a TorchGeo ``BaseDataModule`` (anything with ``aug``/``train_aug``).
        augmentation: a :class:`SyntheticAugmentation` or ``SyntheticChangePairs``.

    Raises:
        ValueError: if the datamodule's images do not suit synthetic RGB samples.

    .. versionadded:: 0.1
    """
    if datamodule.train_aug is augmentation:
        return
    fit_to = getattr(augmentation, 'fit_to', None)
    if fit_to is not None:
        fit_to(datamodule)
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
      normalised: by default the callback takes ``mean`` and ``std`` from the trainer's
      datamodule (TorchGeo datamodules keep them as attributes), else TorchGeo's default 0
      and 255; give them explicitly for any other normalisation. Synthetic images are
      normalised with them, and real rows are left untouched;
    * the augmentation's ``then`` is not applied, and geometric augmentations of the
      datamodule (flips, crops) have already happened: synthetic rows do not get them.

    Prefer :func:`attach` (the ``train_aug`` slot) with TorchGeo datamodules.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        augmentation: SyntheticAugmentation,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
    ) -> None:
        """Initialize a new SyntheticAugmentationCallback instance.

        Args:
            augmentation: the synthetic augmentation to apply.
            mean: mean the datamodule subtracted from images (scalar or per channel); None:
                the datamodule's ``mean``, else 0.
            std: std it divided them by (scalar or per channel); None: the datamodule's
                ``std``, else 255 (TorchGeo's default).
        """
        super().__init__()
        self.augmentation = augmentation
        self.mean = mean
        self.std = std

    def normalisation(self, trainer: Trainer | None) -> tuple[Tensor, Tensor]:
        """``(mean, std)`` [1, C, 1, 1] the batches were normalised with.

        Args:
            trainer: the trainer, whose datamodule supplies what was not given.

        Returns:
            float32 mean and std.
        """
        datamodule = getattr(trainer, 'datamodule', None)
        found = []
        for given, name, default in ((self.mean, 'mean', 0.0), (self.std, 'std', 255.0)):
            value = given if given is not None else getattr(datamodule, name, default)
            found.append(torch.as_tensor(value, dtype=torch.float32).reshape(1, -1, 1, 1))
        return found[0], found[1]

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
        mean, std = (value.to(image) for value in self.normalisation(trainer))
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


__all__ = ('BatchAugmentation', 'SyntheticAugmentationCallback', 'attach')
