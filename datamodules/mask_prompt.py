# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The conditions to synthesise a bank from: masks and prompts with keys and seeds."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    Sampler,
    SequentialSampler,
    default_collate,
)

from torchgeo_earthsynth.bank.store import SyntheticBank
from torchgeo_earthsynth.compat import DETECTION_BOXES, DETECTION_LABELS
from torchgeo_earthsynth.datasets.earthsynth180k import EarthSynth180K
from torchgeo_earthsynth.datasets.mini import make_mini_corpus

__all__ = (
    'ClaimingBatchSampler',
    'MaskPromptDataModule',
    'MaskPromptDataset',
    'collate_conditions',
)


class MaskPromptDataset(Dataset[dict[str, Any]]):
    """The conditions to synthesise from: masks and prompts of a dataset, with keys and seeds.

    Item ``key`` stands for (source index ``key % len(dataset)``, repeat
    ``key // len(dataset)``) and its seed is ``seed + key``, so a sample does not depend on
    the rank or batch it is generated in.

    Args:
        dataset: yields sample dicts with ``mask`` and ``prompt`` (e.g. ``EarthSynth180K``).
        seed: base seed.
        repeats: samples per condition.
        skip: keys to leave out (already done).
        limit: only the first ``limit`` keys.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        dataset: Dataset[dict[str, Any]],
        seed: int = 0,
        repeats: int = 1,
        skip: set[int | str] | None = None,
        limit: int | None = None,
    ) -> None:
        if repeats < 1:
            raise ValueError(f'repeats must be >= 1, got {repeats}')
        self.dataset = dataset
        self.seed = seed
        self.size = len(dataset)  # type: ignore[arg-type]
        total = self.size * repeats
        total = total if limit is None else min(total, limit)
        skip = skip or set()
        self.keys = [k for k in range(total) if k not in skip]
        self.skipped = total - len(self.keys)

    def __len__(self) -> int:
        """The number of conditions to synthesise."""
        return len(self.keys)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """``mask``, ``prompt``, ``seed``, ``index`` (in the source) and ``key``."""
        key = self.keys[index]
        source = key % self.size
        sample = self.dataset[source]
        item = {
            'mask': torch.as_tensor(sample['mask']).long(),
            'prompt': sample['prompt'],
            'seed': self.seed + key,
            'index': source,
            'key': key,
        }
        if DETECTION_BOXES in sample:  # a box layout: the boxes are the label to keep
            item[DETECTION_BOXES] = sample[DETECTION_BOXES]
            item[DETECTION_LABELS] = sample[DETECTION_LABELS]
        return item


def collate_conditions(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate conditions; boxes and their labels (any count per item) become lists."""
    ragged = (DETECTION_BOXES, DETECTION_LABELS)
    out: dict[str, Any] = default_collate(
        [{k: v for k, v in item.items() if k not in ragged} for item in items]
    )
    for key in ragged:
        if key in items[0]:
            out[key] = [item[key] for item in items]
    return out


class ClaimingBatchSampler(BatchSampler):
    """Batches of the indices whose keys this process claimed in a bank.

    Concurrent writers on one bank (several ``earthsynth synthesize`` runs, or a rerun
    while one still runs) each iterate every key; each key is claimed
    (:meth:`~torchgeo_earthsynth.bank.SyntheticBank.claim`) just before its batch is
    yielded, so exactly one live process generates it, and keys another writer stored
    meanwhile are skipped. The claims are released once the batch is stored
    (:class:`~torchgeo_earthsynth.lightning_modules.BankWriter`) or when the process dies.

    Args:
        sampler: dataset indices, in order (Lightning substitutes its own).
        batch_size: indices per batch.
        drop_last: drop a short last batch (never, for synthesis).
        bank: the bank claimed in.
        keys: the bank key of each dataset index.

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        sampler: Sampler[int] | Iterable[int],
        batch_size: int,
        drop_last: bool,
        bank: SyntheticBank,
        keys: Sequence[int | str],
    ) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.bank, self.keys = bank, keys

    def __iter__(self) -> Iterator[list[int]]:
        """Claim a batch's worth of keys at a time; yield full batches of held ones."""
        wanted: list[int] = []
        ready: list[int] = []
        for index in self.sampler:
            wanted.append(index)
            if len(wanted) == self.batch_size:
                ready += self._claimed(wanted)
                wanted = []
            while len(ready) >= self.batch_size:
                yield ready[: self.batch_size]
                ready = ready[self.batch_size :]
        ready += self._claimed(wanted)
        while len(ready) >= self.batch_size or (ready and not self.drop_last):
            yield ready[: self.batch_size]
            ready = ready[self.batch_size :]

    def _claimed(self, indices: list[int]) -> list[int]:
        held = set(self.bank.claim([self.keys[i] for i in indices])) if indices else set()
        return [i for i in indices if self.keys[i] in held]


class MaskPromptDataModule(pl.LightningDataModule):
    """Predict-only data: the masks + prompts of an EarthSynth-180K split, minus done keys.

    Args:
        root: corpus root (EarthSynth-180K layout); None: the bundled mini corpus (made
            once, 64 px, as ``EarthSynthMiniDataModule`` makes it by default).
        split: its split to take masks and prompts from.
        mode: ``full`` scenes, single-``category`` samples or ``both``.
        batch_size: conditions per predict batch.
        num_workers: DataLoader workers.
        seed: base seed (sample ``key`` gets ``seed + key``).
        repeats: samples per condition.
        limit: only the first ``limit`` keys.
        bank_root: skip keys this bank already holds (resuming).
        bank_split: the bank's split.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        root: str | None = None,
        split: Literal['train', 'val'] = 'val',
        mode: Literal['full', 'category', 'both'] = 'full',
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        repeats: int = 1,
        limit: int | None = None,
        bank_root: str | None = None,
        bank_split: Literal['train', 'val'] = 'train',
    ) -> None:
        super().__init__()
        self.root, self.split, self.mode = root, split, mode
        self.batch_size, self.num_workers = batch_size, num_workers
        self.seed, self.repeats, self.limit = seed, repeats, limit
        self.bank_root, self.bank_split = bank_root, bank_split
        self.predict_dataset: MaskPromptDataset | None = None

    def setup(self, stage: str) -> None:
        """Build the predict dataset, leaving out what the bank already holds."""
        done = (
            SyntheticBank(self.bank_root, self.bank_split).done_keys() if self.bank_root else set()
        )
        root = self.root if self.root is not None else make_mini_corpus()
        source = EarthSynth180K(root, self.split, mode=self.mode)
        self.predict_dataset = MaskPromptDataset(source, self.seed, self.repeats, done, self.limit)

    def predict_dataloader(self) -> DataLoader[dict[str, Any]]:
        """Conditions in key order (Lightning shards them across ranks without repeats).

        With a ``bank_root``, only keys this process claims in the bank (see
        :class:`ClaimingBatchSampler`).
        """
        assert self.predict_dataset is not None, 'call setup() first'
        dataset = self.predict_dataset
        if self.bank_root is None:
            return DataLoader(
                dataset,
                batch_size=self.batch_size,
                shuffle=False,
                num_workers=self.num_workers,
                collate_fn=collate_conditions,
            )
        # Claimed key by key, so concurrent writers on the bank split the work.
        bank = SyntheticBank(self.bank_root, self.bank_split)
        batches = ClaimingBatchSampler(
            SequentialSampler(dataset), self.batch_size, False, bank, dataset.keys
        )
        return DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=self.num_workers,
            collate_fn=collate_conditions,
        )
