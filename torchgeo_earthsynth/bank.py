# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""SyntheticBank, a concurrency-safe disk cache of synthetic samples; ``earthsynth synthesize``."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import LightningCLI
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .datasets import layout
from .datasets.earthsynth180k import EarthSynth180K
from .datasets.mini import make_mini_corpus
from .models import SD15_ID
from .synthesis import ConditionEncoding, SchedulerName, Synthesizer
from .vocabulary import NUM_CLASSES, ids_from_prompt, multi_hot

logger = logging.getLogger(__name__)

#: A filter for :class:`BankWriter`: called with the prediction batch dict (``image``
#: [B, 3, H, W] 0..255, ``mask``, ``prompt``...), returns a bool tensor [B] (True = keep) or
#: an object with such a ``keep`` and optionally ``reasons`` (one string per sample, ``''``
#: when kept, failures joined by ``'; '``, each starting with its rule name), as
#: :class:`~torchgeo_earthsynth.rfilter.RFilter` does.
BatchFilter = Callable[[dict[str, Any]], Any]

PARTS = 'parts'
SUMMARY = 'summary.json'


def _safe(text: str) -> str:
    """A file-name-safe version of ``text``."""
    return re.sub(r'[^A-Za-z0-9_.-]+', '-', text).strip('-') or 'x'


def default_writer_id() -> str:
    """``<host>-<pid>``: unique per process, so every process appends to its own part."""
    return _safe(f'{socket.gethostname()}-{os.getpid()}')


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write_text(path: Path, text: str) -> None:
    """Atomic, fsynced text write (safe with several writers)."""
    layout.atomic_write_bytes(text.encode('utf-8'), path, durable=True)


@dataclass
class _Entry:
    """One stored sample: its JSONL records (the full record first, then category ones)."""

    records: list[dict[str, Any]]
    origin: str

    @property
    def key(self) -> int | str | None:
        key: int | str | None = self.records[0].get('key')
        return key

    @property
    def classes(self) -> list[int]:
        full = self.records[0]
        if isinstance(full.get('classes'), list):
            return [int(c) for c in full['classes']]
        try:  # a record written by another tool: parse its prompt
            return ids_from_prompt(str(full.get('text', '')))
        except ValueError:
            return []

    def paths(self) -> Iterator[str]:
        for record in self.records:
            yield record['file_name']
            yield record['mask_name']


@dataclass
class _Index:
    """What :meth:`SyntheticBank.sample` needs, built once per :meth:`SyntheticBank.refresh`."""

    entries: list[_Entry] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)  # dataset index of each entry
    classes: Tensor = field(default_factory=lambda: torch.zeros(0, NUM_CLASSES, dtype=torch.bool))
    dataset: EarthSynth180K | None = None


class SyntheticBank:
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

    @property
    def jsonl(self) -> Path:
        """The consolidated JSONL (``<split>/<split>.jsonl``)."""
        return layout.jsonl_path(self.split_dir)

    # ------------------------------------------------------------------ writing
    def add(self, samples: Sequence[dict[str, Any]]) -> int:
        """Store samples; they are visible after :meth:`refresh` (or :meth:`consolidate`).

        Args:
            samples: sample dicts with ``image`` float [3, H, W] in 0..255 and ``mask``
                [H, W] vocabulary ids; optional ``key`` (int or str, what :meth:`done_keys`
                reports; default the content hash) and ``seed``.

        Returns:
            The number of samples stored.

        Raises:
            ValueError: on a bad shape, a non-finite image or an id outside the vocabulary
                (nothing of the call is recorded then).
        """
        prepared = []
        for sample in samples:  # check everything before writing anything
            image, mask = self._arrays(sample)
            key = sample.get('key')
            key = key.item() if isinstance(key, Tensor | np.generic) else key
            if not (key is None or isinstance(key, int | str)):
                raise ValueError(f'sample key must be an int or a str, got {type(key).__name__}')
            prepared.append((image, mask, key, sample.get('seed')))
        lines = []
        for image, mask, key, seed in prepared:
            digest = hashlib.sha1(image.tobytes() + mask.tobytes()).hexdigest()
            if key is None:
                key, stem = f'sha1-{digest[:16]}', f'SYN_{digest[:16]}'
            else:
                stem = f'SYN_{_safe(str(key))}_{digest[:8]}'
            records = layout.write_sample(self.split_dir, stem, image, mask, self.categories)
            records[0] |= {
                'key': key,
                'seed': None if seed is None else int(seed),
                'classes': [int(c) for c in np.unique(mask)],
                'writer': self.writer_id,
            }
            if self.durable:
                for record in records:
                    _fsync(self.split_dir / record['file_name'])
                    _fsync(self.split_dir / record['mask_name'])
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

    # ------------------------------------------------------------------ scanning
    def _read_lines(self, path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return
        lines = text.split('\n')
        # The text after the last newline is a line still being written (or torn): skip it.
        for number, line in enumerate(lines[:-1], start=1):
            if not line.strip():
                continue
            origin = f'{path} line {number}'
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                self.problems['unreadable lines'] += 1
                logger.warning('%s: skipped, not valid JSON (%s)', origin, error.msg)
                continue
            if not isinstance(value, dict):
                self.problems['unreadable lines'] += 1
                logger.warning('%s: skipped, expected a JSON object', origin)
                continue
            yield origin, value

    def _scan(self) -> list[_Entry]:
        """Stored samples: the consolidated JSONL first, then the parts, first key wins."""
        self.problems.clear()
        entries: list[_Entry] = []
        for origin, record in self._read_lines(self.jsonl):
            if not all(isinstance(record.get(k), str) for k in layout.REQUIRED_FIELDS):
                self.problems['records missing fields'] += 1
                logger.warning('%s: skipped, needs %s', origin, list(layout.REQUIRED_FIELDS))
                continue
            is_category = layout.CATEGORY_IMAGES in Path(record['file_name']).parts
            if is_category and entries and 'key' not in record:
                entries[-1].records.append(record)  # category records follow their sample
            else:
                entries.append(_Entry([record], origin))
        parts = sorted(self.parts_dir.glob('*.jsonl')) if self.parts_dir.is_dir() else []
        for part in parts:
            for origin, line in self._read_lines(part):
                records = line.get('records')
                if not (
                    isinstance(records, list)
                    and records
                    and all(
                        isinstance(r, dict)
                        and all(isinstance(r.get(k), str) for k in layout.REQUIRED_FIELDS)
                        for r in records
                    )
                ):
                    self.problems['records missing fields'] += 1
                    logger.warning('%s: skipped, expected {"records": [...]}', origin)
                    continue
                entries.append(_Entry(records, origin))
        seen: set[int | str] = set()
        unique = []
        for entry in entries:
            key = entry.key
            if key is not None:
                if key in seen:
                    continue
                seen.add(key)
            unique.append(entry)
        return unique

    def done_keys(self) -> set[int | str]:
        """Keys of every stored sample (read from disk now, not cached).

        Returns:
            The set of keys, for resuming: skip these.
        """
        return {e.key for e in self._scan() if e.key is not None}

    def consolidate(self) -> int:
        """Merge the parts into ``<split>/<split>.jsonl`` atomically.

        Safe while writers run (it takes what they had committed) and when several
        processes consolidate at once (each writes a whole file and renames it). Records
        whose files are gone are left out and counted in :attr:`problems`.

        Returns:
            The number of samples in the consolidated file.
        """
        return len(self._consolidate())

    def _consolidate(self) -> list[_Entry]:
        kept = []
        for entry in self._scan():
            missing = [p for p in entry.paths() if not (self.split_dir / p).is_file()]
            if missing:
                self.problems['records with missing files'] += 1
                logger.warning('%s: skipped, missing %s', entry.origin, missing)
                continue
            kept.append(entry)
        (self.split_dir / layout.IMAGES).mkdir(parents=True, exist_ok=True)
        (self.split_dir / layout.MASKS).mkdir(parents=True, exist_ok=True)
        text = ''.join(json.dumps(r) + '\n' for entry in kept for r in entry.records)
        _atomic_write_text(self.jsonl, text)
        return kept

    def prune(self) -> dict[str, int]:
        """Delete what killed writers left: temporary files and PNGs no record names.

        Only call this while no writer runs (a running writer's newest PNGs have no record
        yet).

        Returns:
            ``{'temporary': n, 'orphans': m}`` files deleted.
        """
        used = {p for entry in self._scan() for p in entry.paths()}
        counts = {'temporary': 0, 'orphans': 0}
        folders = (layout.IMAGES, layout.MASKS, layout.CATEGORY_IMAGES, layout.CATEGORY_MASKS)
        for folder in (*folders, PARTS, '.'):
            directory = self.split_dir / folder
            if not directory.is_dir():
                continue
            for path in directory.iterdir():
                if path.name.startswith('.') and path.name.endswith('.tmp'):
                    path.unlink(missing_ok=True)
                    counts['temporary'] += 1
                elif (
                    folder in folders
                    and path.suffix == '.png'
                    and (f'{folder}/{path.name}' not in used)
                ):
                    path.unlink(missing_ok=True)
                    counts['orphans'] += 1
        return counts

    # ------------------------------------------------------------------ reading
    def refresh(self) -> SyntheticBank:
        """Consolidate and rebuild the cached record list used by :meth:`sample`.

        Returns:
            The bank itself.
        """
        entries = self._consolidate()
        index = _Index()
        if entries:
            index.dataset = EarthSynth180K(self.root, self.split, mode='full')
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
                matches.
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
        if not len(candidates):
            which = '' if classes is None else f' with any of the classes {list(classes)}'
            raise ValueError(
                f'{self!r} holds no sample{which} (as of the last refresh(); fill '
                'it with `earthsynth synthesize` or SyntheticBank.add)'
            )
        if replacement:
            picks = candidates[torch.randint(len(candidates), (n,), generator=generator)]
        else:
            picks = candidates[torch.randperm(len(candidates), generator=generator)[:n]]
        assert index.dataset is not None
        return [index.dataset[index.rows[int(i)]] | {'source': 'synthetic'} for i in picks]


# ---------------------------------------------------------------------- synthesis data
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
        return {
            'mask': torch.as_tensor(sample['mask']).long(),
            'prompt': sample['prompt'],
            'seed': self.seed + key,
            'index': source,
            'key': key,
        }


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
        """Conditions in key order (Lightning shards them across ranks without repeats)."""
        assert self.predict_dataset is not None, 'call setup() first'
        return DataLoader(
            self.predict_dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
        )


class SynthesizerModule(pl.LightningModule):
    """Predict with any diffusers ControlNet export through :class:`Synthesizer`.

    Same ``predict_step`` contract as
    :class:`~torchgeo_earthsynth.lightning_modules.EarthSynthControlNet`, for filling a bank
    from our exports or the released EarthSynth weights.

    Args:
        pretrained: our export folder, a ControlNet folder or a hub id.
        base: Stable Diffusion base for a bare ControlNet.
        subfolder: the ControlNet's subfolder.
        scheduler: sampler.
        num_inference_steps: denoising steps.
        guidance_scale: classifier-free guidance scale.
        negative_prompt: prompt guided away from.
        condition_encoding: mask encoding (default: the export's, else ``grey``).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        pretrained: str,
        base: str = SD15_ID,
        subfolder: str | None = None,
        scheduler: SchedulerName = 'unipc',
        num_inference_steps: int = 20,
        guidance_scale: float = 7.5,
        negative_prompt: str = '',
        condition_encoding: ConditionEncoding | None = None,
    ) -> None:
        super().__init__()
        kwargs: dict[str, Any] = (
            {'condition_encoding': condition_encoding} if (condition_encoding is not None) else {}
        )
        self.synthesizer = Synthesizer.from_pretrained(
            pretrained,
            base,
            subfolder,
            scheduler=scheduler,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            negative_prompt=negative_prompt,
            **kwargs,
        )
        pipe = self.synthesizer.pipeline
        # Registered as submodules so the Trainer moves them to its device.
        self.unet, self.controlnet, self.vae = pipe.unet, pipe.controlnet, pipe.vae
        self.text_encoder = pipe.text_encoder

    def predict_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Any]:
        """Generate an image per (mask, prompt, seed); the mask stays the label."""
        masks = batch['mask']
        seeds = batch.get('seed')
        if seeds is None:
            seeds = torch.arange(batch_idx * len(masks), (batch_idx + 1) * len(masks))
        self.synthesizer.batch_size = len(masks)
        images = self.synthesizer.generate(masks, list(batch['prompt']), seeds)
        return {
            **batch,
            'image': images,
            'mask': masks.long(),
            'prompt': list(batch['prompt']),
            'categories': torch.stack([multi_hot(m) for m in masks]),
            'source': ['synthetic'] * len(masks),
            'seed': torch.as_tensor(seeds),
        }


# ---------------------------------------------------------------------- writer
def _keep_and_reasons(result: Any, size: int) -> tuple[Tensor, list[str]]:
    keep = getattr(result, 'keep', result)
    keep = torch.as_tensor(keep).detach().cpu()
    if keep.shape != (size,):
        raise ValueError(
            f'the filter returned keep of shape {tuple(keep.shape)}; expected a '
            f'bool tensor [{size}]'
        )
    reasons = getattr(result, 'reasons', None)
    reasons = [str(r) for r in reasons] if isinstance(reasons, Sequence) else [''] * size
    return keep.bool(), reasons


class KeyedFilter:
    """Call a filter with batch fields as positional arguments (``filter(images, masks, ...)``).

    Makes a filter with another signature fit :data:`BatchFilter`.

    Args:
        filter: the filter.
        keys: batch keys passed, in order.

    .. versionadded:: 0.1
    """

    def __init__(
        self, filter: Callable[..., Any], keys: Sequence[str] = ('image', 'mask', 'prompt')
    ) -> None:
        self.filter = filter
        self.keys = tuple(keys)

    def __call__(self, batch: dict[str, Any]) -> Any:
        """The filter's verdict on ``batch``."""
        return self.filter(*(batch[k] for k in self.keys))


class BankWriter(BasePredictionWriter):
    """Write ``Trainer.predict`` outputs into a :class:`SyntheticBank`, one part per rank.

    Each rank appends its samples to ``parts/rank<r>-<host>-<pid>.jsonl`` as its batches end;
    Lightning's distributed predict sampler gives every dataset index to one rank only. The
    sample key is ``key`` of the batch (see :class:`MaskPromptDataset`), else the dataset
    index. An optional filter drops samples (non-finite images are always dropped); at the end
    rank 0 consolidates the bank and writes ``<split>/summary.json`` (also kept in
    :attr:`summary`).

    Args:
        root: bank root.
        split: bank split.
        rfilter: :data:`BatchFilter` applied to every prediction batch (e.g. an ``RFilter``).
        categories: also write single-category samples.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        root: str = 'output/bank',
        split: Literal['train', 'val'] = 'train',
        rfilter: BatchFilter | None = None,
        categories: bool = False,
    ) -> None:
        super().__init__('batch')
        self.root, self.split, self.rfilter, self.categories = root, split, rfilter, categories
        self.bank = SyntheticBank(root, split, categories=categories)
        self.stats: dict[str, Any] = {}
        #: The last run's summary (global rank 0 only).
        self.summary: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Open the bank with this rank's writer id and reset the counts."""
        super().setup(trainer, pl_module, stage)
        writer = f'rank{trainer.global_rank}-{default_writer_id()}'
        self.bank = SyntheticBank(self.root, self.split, writer, self.categories)
        self.summary = None
        self.stats = {
            'writer': self.bank.writer_id,
            'predicted': 0,
            'written': 0,
            'dropped': 0,
            'dropped_by': Counter(),
        }

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Filter the batch's samples and add the kept ones to this rank's part."""
        images = prediction['image']
        size = len(images)
        keys = prediction.get('key', batch.get('key') if isinstance(batch, dict) else None)
        if keys is None:
            if batch_indices is None:
                raise ValueError('BankWriter needs a "key" in the batch or batch indices')
            keys = list(batch_indices)
        keys = keys.tolist() if isinstance(keys, Tensor) else list(keys)
        keep = torch.ones(size, dtype=torch.bool)
        reasons = [''] * size
        if self.rfilter is not None:
            keep, reasons = _keep_and_reasons(self.rfilter(prediction), size)
        finite = torch.isfinite(images.detach().flatten(1)).all(dim=1).cpu()
        seeds = prediction.get('seed')
        samples = []
        for i in range(size):
            if not keep[i] or not finite[i]:
                why = reasons[i] if not keep[i] else 'non-finite image'
                for part in why.split('; ') if why else ['unspecified']:
                    rule = re.match(r'[A-Za-z_-]+', part)
                    self.stats['dropped_by'][rule.group(0) if rule else part] += 1
                self.stats['dropped'] += 1
                continue
            samples.append(
                {
                    'image': images[i],
                    'mask': prediction['mask'][i],
                    'key': keys[i],
                    'seed': None if seeds is None else int(seeds[i]),
                }
            )
        self.stats['predicted'] += size
        self.stats['written'] += self.bank.add(samples)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Gather every rank's counts; rank 0 consolidates and writes the summary.

        In ``teardown`` rather than ``on_predict_end``, which a rank with no batch skips.
        """
        if stage != 'predict' or not self.stats:
            return
        stats = self.stats | {'dropped_by': dict(self.stats['dropped_by'])}
        gathered = [stats]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered = [{}] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, stats)
        if not trainer.is_global_zero:
            return
        dropped_by: Counter[str] = Counter()
        for rank in gathered:
            dropped_by.update(rank['dropped_by'])
        datamodule = getattr(trainer, 'datamodule', None)
        dataset = getattr(datamodule, 'predict_dataset', None)
        summary = {
            'bank': str(self.bank.split_dir),
            'predicted': sum(r['predicted'] for r in gathered),
            'written': sum(r['written'] for r in gathered),
            'dropped': sum(r['dropped'] for r in gathered),
            'dropped_by': dict(dropped_by),
            'skipped_done': getattr(dataset, 'skipped', None),
            'bank_size': self.bank.consolidate(),
            'ranks': gathered,
        }
        _atomic_write_text(self.bank.split_dir / SUMMARY, json.dumps(summary, indent=2) + '\n')
        self.summary = summary


# ---------------------------------------------------------------------- CLI
class SynthesizeCLI(LightningCLI):
    """LightningCLI for ``earthsynth synthesize``: model, data, ``bank`` writer, trainer."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        """Add the bank writer (a Trainer callback), the checkpoint, and link the bank."""
        parser.add_lightning_class_args(BankWriter, 'bank')
        parser.add_argument(
            '--ckpt_path',
            type=str | None,
            default=None,
            help='Lightning checkpoint to load into the model',
        )
        parser.link_arguments('bank.root', 'data.bank_root')
        parser.link_arguments('bank.split', 'data.bank_split')


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """``earthsynth synthesize``: fill a :class:`SyntheticBank` with ``Trainer.predict``.

    The YAML (``--config``) names the ``model`` (a LightningModule whose ``predict_step``
    returns ``image``/``mask``/``key``/``seed``, e.g. ``EarthSynthControlNet`` with
    ``ckpt_path``, or ``SynthesizerModule`` for a diffusers export), ``data``
    (:class:`MaskPromptDataModule`), ``bank`` (:class:`BankWriter`: root, split, rfilter) and
    ``trainer`` (accelerator, devices, strategy...). A rerun skips the keys already banked.

    Args:
        argv: arguments after ``synthesize`` (e.g. ``['--config', 'configs/x.yaml']``;
            default ``sys.argv[1:]``).

    Returns:
        The run summary on global rank 0 (also in ``<bank>/<split>/summary.json``), else None.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    # LightningCLI warns when it gets args while sys.argv holds others (`earthsynth
    # synthesize ...`); hide them while parsing only: DDP's launcher re-runs sys.argv.
    saved, sys.argv = sys.argv, sys.argv[:1]
    try:
        cli = SynthesizeCLI(
            model_class=pl.LightningModule,
            subclass_mode_model=True,
            datamodule_class=MaskPromptDataModule,
            run=False,
            args=args,
            seed_everything_default=0,
            save_config_callback=None,
            trainer_defaults={
                'logger': False,
                'enable_checkpointing': False,
                'enable_model_summary': False,
            },
            parser_kwargs={'prog': 'earthsynth synthesize', 'description': main.__doc__},
        )
    finally:
        sys.argv = saved
    ckpt_path = cli.config.get('ckpt_path')
    cli.trainer.predict(
        cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path, return_predictions=False
    )
    callbacks: list[pl.Callback] = cli.trainer.callbacks  # type: ignore[attr-defined]
    writer = next(c for c in callbacks if isinstance(c, BankWriter))
    summary: dict[str, Any] | None = getattr(writer, 'summary', None)
    if cli.trainer.is_global_zero and summary is not None:
        print(
            f'bank {summary["bank"]}: wrote {summary["written"]}, dropped '
            f'{summary["dropped"]} {summary["dropped_by"] or ""}, skipped '
            f'{summary["skipped_done"]} already done; '
            f'{summary["bank_size"]} in the bank'
        )
    return summary
