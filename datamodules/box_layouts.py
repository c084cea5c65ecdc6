# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The box layouts of a detection dataset as conditions to synthesise a detection bank from."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset

from torchgeo_earthsynth.bank.store import SyntheticBank
from torchgeo_earthsynth.boxes.recompose import BoxRecomposer
from torchgeo_earthsynth.boxes.records import check_boxes, scale_boxes
from torchgeo_earthsynth.compat import DETECTION_BOXES, DETECTION_LABELS, NonGeoDataset
from torchgeo_earthsynth.encodings.encoding import DatasetEncoding
from torchgeo_earthsynth.encodings.registry import encoding_for
from torchgeo_earthsynth.transforms.synthetic_labels import present_prompts, rasterize_boxes
from torchgeo_earthsynth.vocabulary import BACKGROUND, NUM_CLASSES

from .mask_prompt import MaskPromptDataModule, MaskPromptDataset


class BoxLayoutDataset(Dataset[dict[str, Any]]):
    """A detection dataset's layouts (boxes and classes) as vocabulary conditions.

    Item ``i`` is the layout of sample ``i % len(dataset)``: its boxes scaled to ``size``,
    their classes mapped to vocabulary ids by the dataset's encoding (boxes of classes
    without a vocabulary counterpart are left out), rasterised into the condition mask
    (:func:`~torchgeo_earthsynth.transforms.rasterize_boxes`) and described by the template
    prompt. Items past the first pass (``repeats > 1``) are counterfactual recompositions of
    it (``recompose``), seeded by the item's index, so they do not depend on the rank or
    batch they are made in. The boxes and ids stay with the condition (TorchGeo's detection
    keys): they are the exact label of what is generated from it.

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        dataset: Dataset[dict[str, Any]],
        size: int = 512,
        encoding: str | DatasetEncoding | None = None,
        recompose: BoxRecomposer | None = None,
        repeats: int = 1,
        seed: int = 0,
    ) -> None:
        """Initialize a new BoxLayoutDataset instance.

        Args:
            dataset: a detection dataset (samples with ``image``, ``bbox_xyxy``, ``label``;
                e.g. TorchGeo's ``VHR10``).
            size: side of the square conditions (the synthesizer's image size).
            encoding: the registered dataset (or encoding) whose label values these are
                (default: the dataset's class).
            recompose: makes the counterfactual layouts (required when ``repeats > 1``).
            repeats: layouts per source sample (the first is the real one).
            seed: base seed of the recompositions.

        Raises:
            ValueError: if ``repeats < 1``, or ``repeats > 1`` without ``recompose``.
        """
        if repeats < 1:
            raise ValueError(f'repeats must be >= 1, got {repeats}')
        if repeats > 1 and recompose is None:
            raise ValueError('repeats > 1 makes counterfactual layouts: pass recompose=...')
        self.dataset = dataset
        self.size = size
        self.encoding = encoding_for(encoding if encoding is not None else type(dataset))
        self.lut = self.encoding.lut()
        self.recompose = recompose
        self.repeats = repeats
        self.seed = seed
        self.count = len(dataset)  # type: ignore[arg-type]

    def __len__(self) -> int:
        """Layouts: ``repeats`` per source sample."""
        return self.count * self.repeats

    def layout(self, index: int) -> tuple[Tensor, Tensor]:
        """The real layout of source sample ``index``: boxes at ``size``, vocabulary ids.

        Args:
            index: the source sample.

        Returns:
            float32 [N, 4] boxes and int64 [N] vocabulary ids.

        Raises:
            ValueError: naming the sample, if its boxes or labels are malformed.
        """
        sample = self.dataset[index]
        where = f'{type(self.dataset).__name__} sample {index}'
        if DETECTION_BOXES not in sample:
            return torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)  # a negative image
        height, width = (int(n) for n in sample['image'].shape[-2:])
        boxes, values = check_boxes(
            sample[DETECTION_BOXES], sample[DETECTION_LABELS], (height, width), where, len(self.lut)
        )
        ids = self.lut[values]
        keep = ids != BACKGROUND
        return scale_boxes(boxes[keep], (height, width), (self.size, self.size)), ids[keep]

    def __getitem__(self, index: int) -> dict[str, Any]:
        """``mask``, ``prompt``, ``bbox_xyxy`` and ``label`` (vocabulary ids) of a layout."""
        source, repeat = index % self.count, index // self.count
        boxes, ids = self.layout(source)
        if repeat:
            assert self.recompose is not None
            generator = torch.Generator().manual_seed(self.seed + index)
            boxes, ids = self.recompose(boxes, ids, (self.size, self.size), generator)
        identity = torch.arange(NUM_CLASSES)  # the labels are vocabulary ids already
        mask = rasterize_boxes([boxes], [ids], identity, (self.size, self.size))[0]
        return {
            'mask': mask,
            'prompt': present_prompts(mask[None])[0][0],
            DETECTION_BOXES: boxes,
            DETECTION_LABELS: ids,
        }


class BoxLayoutDataModule(MaskPromptDataModule):
    """Predict-only data: a detection dataset's layouts (and recompositions), minus done keys.

    ``earthsynth synthesize`` with this datamodule fills a detection bank: each sample is
    generated from a layout's rasterised boxes and keeps those boxes exactly
    (:class:`~torchgeo_earthsynth.lightning_modules.BankWriter`); resuming, distribution
    and concurrent writers work as for :class:`MaskPromptDataModule` (keys, seeds, claims).

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        dataset: NonGeoDataset,
        size: int = 512,
        encoding: str | None = None,
        recompose: BoxRecomposer | None = None,
        repeats: int = 1,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        limit: int | None = None,
        bank_root: str | None = None,
        bank_split: Literal['train', 'val'] = 'train',
    ) -> None:
        """Initialize a new BoxLayoutDataModule instance.

        Args:
            dataset: the detection dataset, a TorchGeo ``NonGeoDataset`` such as ``VHR10``
                (its training samples: the bank feeds training).
            size: side of the generated images.
            encoding: the registered dataset whose label values these are (default: the
                dataset's class).
            recompose: counterfactual layouts for repeats past the first (fitted on the
                dataset's layouts when not fitted yet).
            repeats: layouts per source sample.
            batch_size: conditions per predict batch.
            num_workers: DataLoader workers.
            seed: base seed (key ``k`` is generated with seed ``seed + k``).
            limit: only the first ``limit`` keys.
            bank_root: skip keys this bank already holds (resuming) and claim the others.
            bank_split: the bank's split.
        """
        super().__init__(
            split='train',
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            limit=limit,
            bank_root=bank_root,
            bank_split=bank_split,
        )
        self.layouts = BoxLayoutDataset(dataset, size, encoding, recompose, repeats, seed)

    def setup(self, stage: str) -> None:
        """Build the predict dataset, leaving out what the bank already holds."""
        done = (
            SyntheticBank(self.bank_root, self.bank_split).done_keys() if self.bank_root else set()
        )
        recompose = self.layouts.recompose
        if recompose is not None and not recompose.fitted:
            recompose.fit(self.layouts.layout(i) for i in range(self.layouts.count))
        self.predict_dataset = MaskPromptDataset(self.layouts, self.seed, 1, done, self.limit)


__all__ = ('BoxLayoutDataModule', 'BoxLayoutDataset')
