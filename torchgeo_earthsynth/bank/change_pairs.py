# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""A bank of synthetic change pairs in LEVIR-CD's layout (TorchGeo's ``LEVIRCD`` reads it)."""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from torchgeo_earthsynth.atomic import atomic_write_bytes
from torchgeo_earthsynth.datasets.layout import png_bytes

logger = logging.getLogger(__name__)

#: LEVIR-CD's folders: the "before" images, the "after" images, the change masks (0 / 255).
FOLDERS = ('A', 'B', 'label')
#: LEVIR-CD's splits, the prefixes of its file names.
SPLITS = ('train', 'val', 'test')
_UNSAFE = re.compile(r'[^A-Za-z0-9.-]+')


class ChangePairBank:
    """Synthetic change pairs on disk, as LEVIR-CD stores real ones.

    Layout: ``<root>/A/<split>_SYN_<key>_<hash>.png`` (before), ``B/`` (after) and
    ``label/`` (change 255, no change 0), so ``torchgeo.datasets.LEVIRCD(root, split)``
    reads a bank as it reads LEVIR-CD. Each PNG is written atomically and the label last:
    a pair is stored once its label is. A killed writer can leave a before or after image
    without a label; :meth:`prune` removes such orphans (``LEVIRCD`` pairs files by sorted
    name, so an orphan would shift every later pair), and reading calls it first.

    Args:
        root: bank folder (holds ``A/``, ``B/``, ``label/``).
        split: the prefix of the file names, one of LEVIR-CD's splits (:data:`SPLITS`).
        durable: fsync each PNG before the next is written (safe against power loss).

    .. versionadded:: 0.4
    """

    def __init__(self, root: str | Path, split: str = 'train', durable: bool = True) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} (LEVIR-CD's), got {split!r}")
        self.root, self.split, self.durable = Path(root), split, durable
        #: Problems met while reading (reason -> count), e.g. orphans removed.
        self.problems: Counter[str] = Counter()
        self._stored: list[str] | None = None

    def __repr__(self) -> str:
        return f'{type(self).__name__}({str(self.root)!r}, split={self.split!r})'

    def _stems(self, folder: str) -> set[str]:
        directory = self.root / folder
        if not directory.is_dir():
            return set()
        return {path.stem for path in directory.glob(f'{self.split}_SYN_*.png')}

    def _path(self, folder: str, stem: str) -> Path:
        """A file of the bank; refused if it (or a symlink on the way) leaves the root."""
        path = self.root / folder / f'{stem}.png'
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise ValueError(f'{path} resolves outside the bank {self.root}')
        return path

    # ------------------------------------------------------------------ writing
    def add(self, pairs: Tensor, change: Tensor, keys: Sequence[int | str] | None = None) -> int:
        """Store pairs with their change masks.

        Args:
            pairs: float [N, 2, 3, H, W] (before, after) in 0..255.
            change: bool or 0/1 [N, H, W] (or [N, 1, H, W]), 1 where the scene changed.
            keys: one key per pair (e.g. the index of its "before" image; :meth:`done_keys`
                reports them, so a rerun skips them); default the content hash.

        Returns:
            The number of pairs stored.

        Raises:
            ValueError: on bad shapes, non-finite images or keys of the wrong count.
        """
        change = change.squeeze(1) if change.ndim == 4 else change
        expected_change = (len(pairs), *pairs.shape[-2:])
        if pairs.ndim != 5 or pairs.shape[1:3] != (2, 3) or change.shape != expected_change:
            raise ValueError(
                'expected pairs [N, 2, 3, H, W] and change [N, H, W], got '
                f'{list(pairs.shape)} and {list(change.shape)}'
            )
        if not torch.isfinite(pairs).all():
            raise ValueError('pairs hold NaN or infinite values')
        if keys is not None and len(keys) != len(pairs):
            raise ValueError(f'got {len(keys)} keys for {len(pairs)} pairs')
        pixels = pairs.detach().cpu().round().clamp(0, 255).to(torch.uint8)
        pixels_hwc = pixels.permute(0, 1, 3, 4, 2).numpy()
        labels = (change.detach().cpu() != 0).to(torch.uint8).numpy() * 255
        for folder in FOLDERS:
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        for i, (before, after, label) in enumerate(zip(pixels_hwc[:, 0], pixels_hwc[:, 1], labels)):
            files = [png_bytes(np.ascontiguousarray(a)) for a in (before, after, label)]
            digest = hashlib.sha1(b''.join(files)).hexdigest()
            key = digest[:16] if keys is None else _UNSAFE.sub('-', str(keys[i]))
            stem = f'{self.split}_SYN_{key}_{digest[:8]}'
            for folder, data in zip(FOLDERS, files):  # the label last: it commits the pair
                atomic_write_bytes(data, self._path(folder, stem), durable=self.durable)
        self._stored = None
        return len(pairs)

    # ------------------------------------------------------------------ reading
    def prune(self) -> int:
        """Remove before/after images that have no label (a killed writer's); count them."""
        return self._prune(*self._scan())

    def _scan(self) -> tuple[set[str], set[str], set[str]]:
        """The stems in ``A/``, ``B/`` and ``label/``."""
        before, after, labels = (self._stems(folder) for folder in FOLDERS)
        return before, after, labels

    def _prune(self, before: set[str], after: set[str], labels: set[str]) -> int:
        """Remove the orphans among the scanned stems (``before``, ``after`` updated)."""
        removed = 0
        for folder, stems in zip(FOLDERS[:2], (before, after)):
            for stem in sorted(stems - labels):
                self._path(folder, stem).unlink(missing_ok=True)
                stems.discard(stem)
                removed += 1
        if removed:
            self.problems['orphan images removed'] += removed
            logger.warning('%s: removed %d images without a change mask', self, removed)
        return removed

    def refresh(self) -> ChangePairBank:
        """Forget the cached listing (another process may have added pairs)."""
        self._stored = None
        return self

    def stems(self) -> list[str]:
        """The stored pairs' file stems (sorted, as ``LEVIRCD`` orders them; cached).

        Raises:
            ValueError: if a change mask has no before or after image.
        """
        if self._stored is None:
            self._stored = self._list()
        return self._stored

    def _list(self) -> list[str]:
        before, after, labels = self._scan()
        self._prune(before, after, labels)
        complete = labels & before & after
        missing = len(labels - complete)
        if missing:
            self.problems['labels without images'] += missing
            raise ValueError(
                f'{self!r}: {missing} change masks in label/ have no A/ or B/ image; '
                'remove them (a bank is written by ChangePairBank.add)'
            )
        return sorted(complete)

    def __len__(self) -> int:
        return len(self.stems())

    def done_keys(self) -> set[str]:
        """The keys of the stored pairs (as strings)."""
        prefix = f'{self.split}_SYN_'
        return {stem[len(prefix) :].rsplit('_', 1)[0] for stem in self.stems()}

    def load(self, stem: str) -> tuple[Tensor, Tensor]:
        """One stored pair: ``pairs`` float [2, 3, H, W] 0..255 and ``change`` bool [H, W]."""
        images = []
        for folder in FOLDERS[:2]:
            with Image.open(self._path(folder, stem)) as image:
                images.append(torch.from_numpy(np.array(image.convert('RGB'))).permute(2, 0, 1))
        with Image.open(self._path('label', stem)) as label:
            change = torch.from_numpy(np.array(label.convert('L'))) > 0
        return torch.stack(images).float(), change

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``n`` stored pairs drawn at random with replacement.

        Args:
            n: how many pairs (>= 1).
            generator: random generator (reproducible draws).

        Returns:
            ``pairs`` float [n, 2, 3, H, W] in 0..255 and ``change`` bool [n, H, W].

        Raises:
            ValueError: if ``n < 1`` or the bank is empty.
        """
        if n < 1:
            raise ValueError(f'n must be >= 1, got {n}')
        stems = self.stems()
        if not stems:
            raise ValueError(
                f'{self!r} holds no change pair: fill it with fill_change_bank '
                '(torchgeo_earthsynth.transforms.synthetic_change)'
            )
        picks = torch.randint(len(stems), (n,), generator=generator).tolist()
        loaded = [self.load(stems[i]) for i in picks]
        return torch.stack([p for p, _ in loaded]), torch.stack([c for _, c in loaded])

    def dataset(self, **kwargs: Any) -> Any:
        """The bank as TorchGeo's ``LEVIRCD`` dataset (orphans pruned first).

        Args:
            **kwargs: other ``LEVIRCD`` arguments (``transforms``).

        Returns:
            ``torchgeo.datasets.LEVIRCD(root, split)``.
        """
        from torchgeo.datasets import LEVIRCD

        self.refresh().stems()
        return LEVIRCD(str(self.root), self.split, **kwargs)


__all__ = ('FOLDERS', 'SPLITS', 'ChangePairBank')
