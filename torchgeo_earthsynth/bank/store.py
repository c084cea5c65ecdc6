# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""SyntheticBank, a concurrency-safe disk cache of synthetic samples (storage only)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import socket
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from torchgeo_earthsynth.atomic import fsync_file
from torchgeo_earthsynth.bank.records import CLAIMS, PARTS, SUMMARY, _BankRecords, _Index
from torchgeo_earthsynth.boxes.records import boxes_to_record, check_boxes, sample_boxes
from torchgeo_earthsynth.datasets import layout
from torchgeo_earthsynth.datasets.earthsynth180k import EarthSynth180K
from torchgeo_earthsynth.vocabulary import NUM_CLASSES, present_ids

logger = logging.getLogger(__name__)


def _safe(text: str) -> str:
    """A file-name-safe version of ``text``."""
    return re.sub(r'[^A-Za-z0-9_.-]+', '-', text).strip('-') or 'x'


def default_writer_id() -> str:
    """``<host>-<pid>``: unique per process, so every process appends to its own part."""
    return _safe(f'{socket.gethostname()}-{os.getpid()}')


#: Claim files this process holds locked: path -> (pid, descriptor). The pid keeps a
#: forked child from releasing its parent's claims (it shares the parent's locks).
_HELD_CLAIMS: dict[Path, tuple[int, int]] = {}


def _hold_claim(path: Path, writer_id: str) -> bool:
    """Create or take over the claim file ``path`` and lock it; False if another holds it."""
    pid, fd = _HELD_CLAIMS.get(path, (None, -1))
    if pid == os.getpid():
        if _names(path, fd):
            return False  # this process holds it already (for another batch)
        del _HELD_CLAIMS[path]  # its file was deleted (prune): claim afresh
        os.close(fd)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue  # released meanwhile: create it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False  # a live writer holds it
        if not _names(path, fd):  # released (maybe re-created) between open and lock: retry
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, writer_id.encode())
        _HELD_CLAIMS[path] = (os.getpid(), fd)
        return True


def _names(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _drop_claim(path: Path) -> None:
    """Delete and unlock a claim this process holds (no-op for others)."""
    pid, fd = _HELD_CLAIMS.get(path, (None, -1))
    if pid != os.getpid():
        return
    del _HELD_CLAIMS[path]
    if _names(path, fd):  # not deleted (prune) and re-created by another writer
        path.unlink()  # while locked: nobody takes over a file being removed
    os.close(fd)


class SyntheticBank(_BankRecords):
    """A disk cache of synthetic samples in the EarthSynth-180K layout.

    Layout under ``<root>/<split>/``: ``images/SYN_*.png``, ``masks/SYN_*.png`` (and the
    category samples when ``categories=True``), ``parts/<writer>.jsonl`` (append-only, one
    line per sample, one file per writer process) and ``<split>.jsonl``, the consolidated
    view that :class:`~torchgeo_earthsynth.datasets.EarthSynth180K` reads.

    Concurrency: every writer (DataLoader worker, DDP rank, process) appends only to its own
    part; PNGs are written atomically (temporary file + rename) and synced *before* the
    sample's line is appended, flushed and synced, so a killed writer leaves at worst unused
    files or a torn last line, never a record of a half-written sample. Consolidation merges
    the parts into ``<split>.jsonl`` through a temporary file and a rename, so readers see the
    old or the new file, never half of one. A sample's stem is ``SYN_<key>_<content hash>``.

    Resuming: each sample has a ``key`` (e.g. the index of its condition in the source
    dataset); :meth:`done_keys` tells which are stored, so a rerun skips them.

    Reading is cached: :meth:`sample`, ``len()`` and :meth:`keys` use the record list built on
    first use; :meth:`refresh` consolidates and re-scans.

    Args:
        root: bank root (holds ``<split>/``).
        split: ``train`` or ``val``.
        writer_id: this writer's part name (default ``<host>-<pid>``, evaluated at each
            :meth:`add`, so forked DataLoader workers get their own parts).
        categories: also write the single-category samples (category augmentation).
        durable: fsync PNGs before their record is appended (safe against power loss).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        root: str | Path,
        split: Literal['train', 'val'] = 'train',
        writer_id: str | None = None,
        categories: bool = False,
        durable: bool = True,
    ) -> None:
        if split not in EarthSynth180K.splits:
            raise ValueError(f'split must be one of {EarthSynth180K.splits}, got {split!r}')
        self.root = Path(root)
        self.split = split
        self.split_dir = self.root / split
        self.parts_dir = self.split_dir / PARTS
        self._writer_id = None if writer_id is None else _safe(writer_id)
        self.categories = categories
        self.durable = durable
        #: Problems met while scanning (reason -> count), e.g. unreadable part lines.
        self.problems: Counter[str] = Counter()
        self._index: _Index | None = None

    def __repr__(self) -> str:
        return f'{type(self).__name__}({str(self.root)!r}, split={self.split!r})'

    @property
    def writer_id(self) -> str:
        """The part this process appends to."""
        return self._writer_id or default_writer_id()

    # ------------------------------------------------------------------ writing
    def add(self, samples: Sequence[dict[str, Any]]) -> int:
        """Store samples; they are visible after :meth:`refresh` (or :meth:`consolidate`).

        Args:
            samples: sample dicts with ``image`` float [3, H, W] in 0..255 and ``mask``
                [H, W] vocabulary ids; optional ``key`` (int or str, what :meth:`done_keys`
                reports; default the content hash) and ``seed``; a sample generated from
                boxes also has them under TorchGeo's detection keys (``bbox_xyxy`` float
                [N, 4] in pixels, ``label`` int [N] vocabulary ids): they are stored
                exactly and read back with it (:mod:`~torchgeo_earthsynth.boxes.records`).

        Returns:
            The number of samples stored.

        Raises:
            ValueError: on a bad shape, a non-finite image, an id outside the vocabulary or a
                box outside the image (nothing of the call is recorded then).
        """
        prepared: list[tuple[np.ndarray, np.ndarray, Any, Any, dict[str, list[Any]] | None]] = []
        for sample in samples:  # check everything before writing anything
            image, mask = self._arrays(sample)
            key = sample.get('key')
            key = key.item() if isinstance(key, Tensor | np.generic) else key
            if not (key is None or isinstance(key, int | str)):
                raise ValueError(f'sample key must be an int or a str, got {type(key).__name__}')
            found = sample_boxes(sample)
            boxes = None
            if found is not None:
                where = f'sample {key if key is not None else len(prepared)}'
                size = (int(mask.shape[0]), int(mask.shape[1]))
                boxes = boxes_to_record(*check_boxes(*found, size, where))
            prepared.append((image, mask, key, sample.get('seed'), boxes))
        lines = []
        for image, mask, key, seed, boxes in prepared:
            exact = json.dumps(boxes).encode() if boxes else b''
            digest = hashlib.sha1(image.tobytes() + mask.tobytes() + exact).hexdigest()
            if key is None:
                key, stem = f'sha1-{digest[:16]}', f'SYN_{digest[:16]}'
            else:
                stem = f'SYN_{_safe(str(key))}_{digest[:8]}'
            records = layout.write_sample(self.split_dir, stem, image, mask, self.categories)
            records[0] |= {
                'key': key,
                'seed': None if seed is None else int(seed),
                'classes': present_ids(mask),
                'writer': self.writer_id,
            } | (boxes or {})
            if self.durable:
                for record in records:
                    fsync_file(self.split_dir / record['file_name'])
                    fsync_file(self.split_dir / record['mask_name'])
            lines.append(json.dumps({'records': records}) + '\n')
        if lines:
            self._append(''.join(lines))
        return len(lines)

    def _arrays(self, sample: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        image = torch.as_tensor(sample['image']).detach().float().cpu()
        mask = torch.as_tensor(sample['mask']).detach().cpu()
        where = f'sample {sample.get("key", "")!s}'.strip()
        if image.dim() != 3 or image.shape[0] != 3 or mask.shape != image.shape[1:]:
            raise ValueError(
                f'{where}: expected image [3, H, W] and mask [H, W], got '
                f'{tuple(image.shape)} and {tuple(mask.shape)}'
            )
        if not torch.isfinite(image).all():
            raise ValueError(f'{where}: image has NaN or infinite values')
        if mask.numel() and not 0 <= int(mask.min()) <= int(mask.max()) < NUM_CLASSES:
            raise ValueError(
                f'{where}: mask ids must lie in [0, {NUM_CLASSES - 1}], got '
                f'[{int(mask.min())}, {int(mask.max())}]'
            )
        pixels = image.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        return np.ascontiguousarray(pixels), mask.to(torch.uint8).numpy()

    def _append(self, text: str) -> None:
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        part = self.parts_dir / f'{self.writer_id}.jsonl'
        if part.exists() and part.stat().st_size:
            with part.open('rb') as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b'\n':
                    text = '\n' + text  # a killed run of this writer left a torn line: close it
        fd = os.open(part, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            data = text.encode()
            while data:  # one write call in practice; loop on a short write
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ claiming work
    def claim(self, keys: Sequence[int | str]) -> list[int | str]:
        """Claim keys for this process, so concurrent writers split the work.

        A claim is a file ``<split>/claims/<key>`` that this process holds an exclusive
        ``flock`` on until :meth:`release` (or its exit): of several processes claiming a
        key, exactly one gets it. The claim of a writer that died is free again (the system
        drops its lock), so its keys are made by the next writer; stored keys are never
        claimed (checked after locking, so a key committed meanwhile is not made twice).

        Args:
            keys: keys this writer would like to make.

        Returns:
            The keys it now holds, in the given order: make these, leave the others.
        """
        folder = self.split_dir / CLAIMS
        folder.mkdir(parents=True, exist_ok=True)
        held = [key for key in keys if _hold_claim(folder / _safe(str(key)), self.writer_id)]
        done = self.done_keys() if held else set()
        self.release([key for key in held if key in done])
        return [key for key in held if key not in done]

    def release(self, keys: Sequence[int | str]) -> None:
        """Give up claims (after storing the keys, or to leave them to other writers).

        Args:
            keys: keys claimed with :meth:`claim` by this process (others are ignored).
        """
        for key in keys:
            _drop_claim(self.split_dir / CLAIMS / _safe(str(key)))

    # ------------------------------------------------------------------ reading
    def refresh(self) -> SyntheticBank:
        """Consolidate and rebuild the cached record list used by :meth:`sample`.

        Returns:
            The bank itself.
        """
        entries = self._consolidate()
        index = _Index()
        if entries:
            # one bad record must not hide the whole bank: it is skipped and counted
            index.dataset = EarthSynth180K(self.root, self.split, mode='full', strict=False)
            self.problems.update(index.dataset.skipped)
            base = self.split_dir.resolve()
            by_image = {e.records[0]['file_name']: e for e in entries}
            # Another process may have consolidated since: keep the rows both lists hold.
            for row, record in enumerate(index.dataset.records):
                entry = by_image.get(record.image.resolve().relative_to(base).as_posix())
                if entry is not None:
                    index.rows.append(row)
                    index.entries.append(entry)
            index.classes = torch.zeros(len(index.entries), NUM_CLASSES, dtype=torch.bool)
            for row, entry in enumerate(index.entries):
                index.classes[row, entry.classes] = True
        self._index = index
        return self

    def _cached(self) -> _Index:
        if self._index is None:
            self.refresh()
        assert self._index is not None
        return self._index

    def __len__(self) -> int:
        """The number of stored samples (as of the last :meth:`refresh`)."""
        return len(self._cached().entries)

    def keys(self) -> list[int | str | None]:
        """Keys of the stored samples in reading order (as of the last :meth:`refresh`)."""
        return [e.key for e in self._cached().entries]

    def dataset(self, **kwargs: Any) -> EarthSynth180K:
        """The bank as an :class:`~torchgeo_earthsynth.datasets.EarthSynth180K` (after a refresh).

        Args:
            **kwargs: passed to ``EarthSynth180K`` (``mode``, ``transforms``...).

        Returns:
            The dataset.
        """
        self.refresh()
        return EarthSynth180K(self.root, self.split, **kwargs)

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        classes: Sequence[int] | None = None,
        replacement: bool = False,
    ) -> list[dict[str, Any]]:
        """Draw stored samples at random.

        Samples whose files do not decode (e.g. a truncated PNG) are skipped, counted in
        :attr:`problems` and never drawn again; :meth:`prune` removes them from disk.

        Args:
            n: how many samples.
            generator: random generator (reproducible draws).
            classes: only samples whose mask holds any of these vocabulary ids.
            replacement: draw with replacement (exactly ``n`` samples); without it, distinct
                samples, all the matching ones when fewer than ``n`` match.

        Returns:
            Sample dicts (``image`` float32 [3, H, W] 0..255, ``mask`` int64 [H, W],
            ``prompt``, ``categories``, ``source='synthetic'``).

        Raises:
            ValueError: if ``n < 0``, an id is outside the vocabulary, or no stored sample
                matches (or decodes).
        """
        if n < 0:
            raise ValueError(f'n must be >= 0, got {n}')
        index = self._cached()
        candidates = torch.arange(len(index.entries))
        if classes is not None:
            ids = [int(c) for c in classes]
            if any(not 0 <= c < NUM_CLASSES for c in ids):
                raise ValueError(f'class ids {ids} must lie in [0, {NUM_CLASSES - 1}]')
            candidates = candidates[index.classes[:, ids].any(dim=1)]
        readable = [int(i) not in index.unreadable for i in candidates]
        candidates = candidates[torch.tensor(readable, dtype=torch.bool)]
        if not len(candidates):
            which = '' if classes is None else f' with any of the classes {list(classes)}'
            raise ValueError(
                f'{self!r} holds no sample{which} (as of the last refresh(); fill '
                'it with `earthsynth synthesize` or SyntheticBank.add)'
            )
        out: list[dict[str, Any]] = []
        if not replacement:
            for i in candidates[torch.randperm(len(candidates), generator=generator)].tolist():
                if len(out) == n:
                    break
                self._read(index, i, out)
            return out
        while len(out) < n:
            live = [i for i in candidates.tolist() if i not in index.unreadable]
            if not live:
                raise ValueError(
                    f'{self!r}: none of the {len(candidates)} matching samples decodes'
                )
            self._read(index, live[int(torch.randint(len(live), (1,), generator=generator))], out)
        return out

    def _read(self, index: _Index, entry: int, out: list[dict[str, Any]]) -> None:
        """Append stored sample ``entry`` to ``out``, or count it as unreadable (once)."""
        if entry in index.unreadable:
            return
        assert index.dataset is not None
        try:
            # strict read: the lenient one would substitute another sample for a bad one
            sample = index.dataset._load(index.rows[entry])
        except ValueError as error:
            index.unreadable.add(entry)
            self.problems['unreadable samples'] += 1
            logger.warning('%s: skipped an unreadable sample: %s', self, error)
            return
        if index.dataset.transforms is not None:
            sample = index.dataset.transforms(sample)
        out.append(sample | {'source': 'synthetic'})


__all__ = ('CLAIMS', 'PARTS', 'SUMMARY', 'SyntheticBank', 'default_writer_id')
