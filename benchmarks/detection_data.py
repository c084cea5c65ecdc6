# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Random box scenes and a bank of box samples for ``augmentation.py --task detection``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kornia.augmentation as K
import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset
from torchgeo.datamodules.utils import collate_fn_detection

from torchgeo_earthsynth.bank import SyntheticBank
from torchgeo_earthsynth.encodings.registry import encoding_for
from torchgeo_earthsynth.transforms import SyntheticAugmentation, rasterize_boxes
from torchgeo_earthsynth.vocabulary import NUM_CLASSES

#: VHR-10's label values (COCO category ids 1..10) and their vocabulary ids.
VHR10_VALUES = torch.arange(1, 11)


def random_boxes(generator: torch.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One to three boxes inside a ``size`` image and VHR-10 label values."""
    count = int(torch.randint(1, 4, (1,), generator=generator))
    corner = torch.rand(count, 2, generator=generator) * size * 0.6
    extent = (torch.rand(count, 2, generator=generator) * 0.3 + 0.1) * size
    boxes = torch.cat([corner, (corner + extent).clamp(max=size)], 1)
    values = VHR10_VALUES[torch.randint(len(VHR10_VALUES), (count,), generator=generator)]
    return boxes, values


class BoxScenes(Dataset[dict[str, Any]]):
    """``num`` random RGB scenes with boxes, as TorchGeo's detection datasets give samples."""

    def __init__(self, num: int, size: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (num, 3, size, size), generator=generator)
        self.boxes = [random_boxes(generator, size) for _ in range(num)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        boxes, values = self.boxes[index]
        return {'image': self.images[index].float(), 'bbox_xyxy': boxes, 'label': values}


class BoxScenesDataModule(pl.LightningDataModule):
    """Training loader of :class:`BoxScenes`; batches go through ``synthetic`` then ``aug``."""

    def __init__(
        self, batch_size: int, size: int, num: int, synthetic: SyntheticAugmentation | None
    ) -> None:
        super().__init__()
        self.batch_size, self.dataset = batch_size, BoxScenes(num, size)
        # VHR10DataModule's normalisation, applied after the synthetic rows went in
        self.aug = K.AugmentationSequential(
            K.Normalize(mean=torch.tensor(0.0), std=torch.tensor(255.0)),
            data_keys=None,
            keepdim=True,
        )
        self.synthetic = synthetic
        if synthetic is not None:
            synthetic.then = self.aug

    def train_dataloader(self) -> DataLoader[dict[str, Any]]:
        """Shuffled batches, collated as TorchGeo's detection datamodules collate them."""
        return DataLoader(
            self.dataset, batch_size=self.batch_size, shuffle=True, collate_fn=collate_fn_detection
        )

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> Any:
        """The synthetic augmentation (which runs ``aug`` after it), else ``aug``."""
        return (self.synthetic if self.synthetic is not None else self.aug)(batch)


def make_box_bank(folder: Path, size: int, count: int = 64) -> SyntheticBank:
    """A bank of samples "generated" from random boxes (random images stand in)."""
    bank = SyntheticBank(folder, durable=False)
    generator = torch.Generator().manual_seed(1)
    lut = encoding_for('VHR10').lut()  # VHR-10 label value -> vocabulary id
    samples = []
    for key in range(count):
        boxes, values = random_boxes(generator, size)
        ids = lut[values]
        mask = rasterize_boxes([boxes], [ids], torch.arange(NUM_CLASSES), (size, size))[0]
        image = torch.randint(0, 256, (3, size, size), generator=generator).float()
        samples.append({'image': image, 'mask': mask, 'bbox_xyxy': boxes, 'label': ids, 'key': key})
    bank.add(samples)
    return bank.refresh()


__all__ = ('BoxScenesDataModule', 'make_box_bank')
