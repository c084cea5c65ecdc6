# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""TorchGeo's VHR10 datamodule with a synthetic-augmentation slot, for detection configs."""

from __future__ import annotations

from typing import Any

from torchgeo_earthsynth.compat import VHR10DataModule
from torchgeo_earthsynth.transforms.synthetic_augmentation import SyntheticAugmentation
from torchgeo_earthsynth.transforms.synthetic_callback import attach


class SyntheticVHR10DataModule(VHR10DataModule):
    """TorchGeo's ``VHR10DataModule`` whose training batches go through ``synthetic``.

    The same datamodule (splits, loaders, patch size, normalisation), with the augmentation
    put in its ``train_aug`` slot (:func:`~torchgeo_earthsynth.transforms.attach`): synthetic
    rows come in raw and then get VHR10's own training augmentation. A config switches
    synthetic detection data on with this class and a ``synthetic:`` block alone, e.g.
    ``configs/torchgeo_detection_synthetic.yaml``.

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        batch_size: int = 64,
        patch_size: tuple[int, int] | int = 512,
        num_workers: int = 0,
        val_split_pct: float = 0.2,
        test_split_pct: float = 0.2,
        synthetic: SyntheticAugmentation | None = None,
        root: str = 'data',
        download: bool = False,
        **kwargs: Any,
    ) -> None:
        """Initialize a new SyntheticVHR10DataModule instance.

        Args:
            batch_size: size of each mini-batch.
            patch_size: size of each patch, ``size`` or ``(height, width)``.
            num_workers: DataLoader workers.
            val_split_pct: share of the dataset held out for validation.
            test_split_pct: share of the dataset held out for testing.
            synthetic: synthetic augmentation of training batches (``task='detection'``);
                None trains exactly as ``VHR10DataModule``.
            root: the dataset's root folder (TorchGeo's ``VHR10``).
            download: download it if missing.
            **kwargs: more arguments of TorchGeo's ``VHR10`` (``split``, ``checksum``).

        Raises:
            ValueError: if ``synthetic`` is not a detection augmentation.
        """
        super().__init__(
            batch_size,
            patch_size,
            num_workers,
            val_split_pct,
            test_split_pct,
            root=root,
            download=download,
            **kwargs,
        )
        self.synthetic = synthetic
        if synthetic is not None:
            if synthetic.task != 'detection':
                raise ValueError(
                    f"synthetic must have task='detection' for VHR10, got {synthetic.task!r}"
                )
            attach(self, synthetic)


__all__ = ('SyntheticVHR10DataModule',)
