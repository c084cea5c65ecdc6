# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""EarthSynth-180K records: listing a split's samples from its JSONL or folders, checked."""

from __future__ import annotations

import json
import logging
import os
import posixpath
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, overload

import numpy as np

from torchgeo_earthsynth.boxes.records import boxes_from_record
from torchgeo_earthsynth.conditions import METADATA_FIELDS, NUM_METADATA, metadata_from_record
from torchgeo_earthsynth.datasets import layout
from torchgeo_earthsynth.vocabulary import (
    BACKGROUND,
    present_ids,
    prompt_from_ids,
    source_from_stem,
)

logger = logging.getLogger(__name__)


class Record(NamedTuple):
    """One sample of an :class:`EarthSynth180K`, as listed when the dataset is built.

    .. versionadded:: 0.1
    """

    #: The image PNG.
    image: Path
    #: The mask PNG.
    mask: Path
    #: The prompt from the JSONL; None: derived from the mask when read.
    prompt: str | None
    #: For a single-category sample made on the fly from a full mask, its class id.
    category: int | None
    #: Where the record came from (JSONL line or mask file), for messages.
    origin: str


class _Row(NamedTuple):
    """A sample found when listing the split, before on-the-fly category samples."""

    image: str
    mask: str
    prompt: str
    line: int
    is_category: bool
    metadata: np.ndarray | None
    #: Exact detection boxes (float32 [N, 4] pixels, int64 [N] vocabulary ids), if any.
    boxes: tuple[np.ndarray, np.ndarray] | None = None


class _Strings:
    """Many strings packed in two numpy arrays.

    No Python object per string, so forked DataLoader workers do not copy them page by page
    as reference counts change (180K+ records).
    """

    def __init__(self, items: Sequence[str]) -> None:
        encoded = [s.encode() for s in items]
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self.offsets[1:])
        self.data = np.frombuffer(b''.join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> str:
        return self.data[self.offsets[index] : self.offsets[index + 1]].tobytes().decode()


class _Listing:
    """Which files exist in a split, read once per folder instead of one stat per file.

    Also tells whether a file resolves inside the dataset, symlinks included, at the cost
    of one ``realpath`` per folder and per symlink (not per file).
    """

    def __init__(self, base: Path, bounds: Sequence[Path]) -> None:
        self.base = base
        self.bounds = [os.path.realpath(b) for b in bounds]
        #: folder -> {file name: is a symlink}
        self.folders: dict[str, dict[str, bool]] = {}
        self.real_folders: dict[str, str] = {}

    def names(self, folder: str) -> dict[str, bool]:
        if folder not in self.folders:
            try:
                with os.scandir(self.base / folder) as entries:
                    self.folders[folder] = {e.name: e.is_symlink() for e in entries}
            except OSError:
                self.folders[folder] = {}
        return self.folders[folder]

    def has(self, relative: str) -> bool:
        folder, _, name = relative.rpartition('/')
        return name in self.names(folder)

    def outside(self, relative: str) -> str | None:
        """The real path of an existing file if it resolves outside the dataset, else None."""
        folder, _, name = relative.rpartition('/')
        if folder not in self.real_folders:
            self.real_folders[folder] = os.path.realpath(self.base / folder)
        real = os.path.join(self.real_folders[folder], name)
        if self.names(folder).get(name):
            real = os.path.realpath(real)
        inside = any(real.startswith(bound + os.sep) for bound in self.bounds)
        return None if inside else real


class _RecordView(Sequence[Record]):
    """Read-only list of the :class:`Record` s of a dataset."""

    def __init__(self, dataset: _RecordListing) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    @overload
    def __getitem__(self, index: int) -> Record: ...

    @overload
    def __getitem__(self, index: slice) -> list[Record]: ...

    def __getitem__(self, index: int | slice) -> Record | list[Record]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self.dataset._record(index)

    def __iter__(self) -> Iterator[Record]:
        return (self.dataset._record(i) for i in range(len(self)))


class _RecordListing:
    """A split's samples, listed and checked once when the dataset is built.

    :class:`~torchgeo_earthsynth.datasets.EarthSynth180K` sets the attributes below and
    calls :meth:`_load_records`; samples are then read by index from compact arrays.
    """

    root: Path
    split: str
    split_dir: Path
    mode: str
    strict: bool
    skipped: Counter[str]
    source_gsd: ClassVar[Mapping[str, float]]
    _jsonl: Path | None
    _images: _Strings
    _masks: _Strings
    _prompts: _Strings
    _has_prompt: np.ndarray
    _categories: np.ndarray
    _lines: np.ndarray
    _metadata: np.ndarray

    def _bad(self, reason: str, message: str) -> None:
        if self.strict:
            raise ValueError(message)
        self.skipped[reason] += 1
        logger.debug('skipping: %s', message)

    def _locate(self, raw: str, field: str, origin: str, listing: _Listing) -> str | None:
        """A JSONL path as a normalised path relative to the split folder, if it exists."""
        norm = posixpath.normpath(raw.replace('\\', '/'))
        candidates = []
        if not (posixpath.isabs(norm) or norm in ('.', '..') or norm.startswith('../')):
            candidates.append(norm)
        parts = norm.split('/')
        # released JSONLs hold the authors' paths: ./data/EarthSynth-180K/train/images/X.png
        if len(parts) >= 3 and parts[-3] == self.split and parts[-2] in layout.FOLDERS:
            candidates.append(f'{parts[-2]}/{parts[-1]}')
        for candidate in candidates:
            if listing.has(candidate):
                real = listing.outside(candidate)
                if real is None:
                    return candidate
                self._bad(
                    'paths outside the dataset root',
                    f'{origin}: field "{field}" = {raw!r} resolves to {real}, outside the '
                    f'dataset root {self.root}; expected files (and symlinks) inside it',
                )
                return None
        if candidates:
            self._bad(
                'missing files',
                f'{origin}: field "{field}" = {raw!r}: no such file in {self.split_dir}',
            )
        else:
            self._bad(
                'paths outside the split folder',
                f'{origin}: field "{field}" = {raw!r} points outside the split folder '
                f'{self.split_dir}; expected a path relative to it, such as "images/X.png"',
            )
        return None

    def _load_records(self) -> None:
        images: list[str] = []
        masks: list[str] = []
        prompts: list[str] = []
        categories: list[int] = []
        lines: list[int] = []
        metadata: list[np.ndarray] = []
        #: dataset index -> exact boxes of the samples that have them (few: a dict)
        self._boxes: dict[int, tuple[np.ndarray, np.ndarray]] = {}

        jsonl = layout.jsonl_path(self.split_dir)
        self._jsonl = jsonl if jsonl.exists() else None
        rows = self._rows_from_jsonl(jsonl) if self._jsonl else self._rows_from_folders()
        # no category records (no JSONL, or one without them): make them from the full masks
        derive = self.mode != 'full' and not any(row.is_category for row in rows)
        for row in rows:
            ids: list[int] | None = self._class_ids(row.mask, row.line) if derive else []
            if ids is None:
                continue
            known = row.metadata if row.metadata is not None else self._source_metadata(row.image)
            keep = (
                [-1] if self.mode == 'both' or (self.mode == 'category') == row.is_category else []
            )
            for class_id in keep + ids:
                if row.boxes is not None:
                    self._boxes[len(images)] = row.boxes
                images.append(row.image)
                masks.append(row.mask)
                prompts.append(row.prompt if class_id < 0 else prompt_from_ids([class_id]))
                categories.append(class_id)
                lines.append(row.line)
                metadata.append(known)
        # no per-sample Python objects: see _Strings
        self._images = _Strings(images)
        self._masks = _Strings(masks)
        self._prompts = _Strings(prompts)
        self._has_prompt = np.array([bool(p) for p in prompts], dtype=bool)
        self._categories = np.array(categories, dtype=np.int16)
        self._lines = np.array(lines, dtype=np.int64)
        self._metadata = np.stack(metadata) if metadata else np.zeros((0, NUM_METADATA), np.float32)

    def _source_metadata(self, image: str) -> np.ndarray:
        """Metadata known from a file stem's source alone: its GSD (see :data:`SOURCE_GSD`)."""
        metadata = np.full(NUM_METADATA, np.nan, dtype=np.float32)
        gsd = self.source_gsd.get(source_from_stem(posixpath.basename(image)))
        if gsd is not None:
            metadata[METADATA_FIELDS.index('gsd')] = gsd
        return metadata

    def _record_metadata(
        self, entry: dict[str, Any], origin: str
    ) -> tuple[bool, np.ndarray | None]:
        """``(good, float32 [7] or None when absent)`` from a record's ``metadata`` object."""
        value = entry.get('metadata')
        if value is None:
            return True, None
        try:
            if not isinstance(value, dict):
                raise ValueError(f'expected a JSON object, got {value!r}')
            return True, metadata_from_record(value).numpy()
        except ValueError as error:
            self._bad('records with bad metadata', f'{origin}: field "metadata": {error}')
            return False, None

    def _rows_from_jsonl(self, jsonl: Path) -> list[_Row]:
        """The good records of the JSONL, each sample once."""
        listing = _Listing(self.split_dir, (self.root, self.split_dir))
        rows = []
        first_line: dict[tuple[str, str], int] = {}
        expected = ', '.join(layout.REQUIRED_FIELDS)
        lines = list(layout.iter_jsonl(jsonl))
        if not lines:
            raise ValueError(
                f'{jsonl} is empty; expected one JSON record per line ({expected}), or no '
                f'JSONL at all to read the pairs in {layout.IMAGES}/ and {layout.MASKS}/'
            )
        for number, line in lines:
            origin = f'{jsonl} line {number}'
            try:
                entry = json.loads(line)
            except ValueError as error:
                self._bad(
                    'lines that are not JSON',
                    f'{origin}: not valid JSON ({error}); expected one JSON object per line',
                )
                continue
            if not isinstance(entry, dict):
                missing = list(layout.REQUIRED_FIELDS)
            else:
                missing = [k for k in layout.REQUIRED_FIELDS if not isinstance(entry.get(k), str)]
            if missing:
                self._bad(
                    'records missing fields',
                    f'{origin}: missing or non-string field(s) {", ".join(missing)}; expected '
                    f'a JSON object with string fields {expected}',
                )
                continue
            is_category = layout.CATEGORY_IMAGES in entry['file_name'].replace('\\', '/')
            if self.mode == 'full' and is_category:
                continue  # not needed: leave its files unchecked
            image = self._locate(entry['file_name'], 'file_name', origin, listing)
            mask = self._locate(entry['mask_name'], 'mask_name', origin, listing)
            good, metadata = self._record_metadata(entry, origin)
            try:
                boxes = boxes_from_record(entry, origin)
            except ValueError as error:
                self._bad('records with bad boxes', str(error))
                continue
            if image is None or mask is None or not good:
                continue
            if (image, mask) in first_line:
                self._bad(
                    'duplicate records',
                    f'{origin}: repeats the sample of line {first_line[image, mask]} '
                    f'({image}, {mask}); expected each sample once',
                )
                continue
            first_line[image, mask] = number
            rows.append(_Row(image, mask, entry['text'], number, is_category, metadata, boxes))
        return rows

    def _rows_from_folders(self) -> list[_Row]:
        """A row for each mask with an image of the same name."""
        listing = _Listing(self.split_dir, (self.root, self.split_dir))
        images = listing.names(layout.IMAGES)
        rows = []
        for name in sorted(listing.names(layout.MASKS)):
            if not name.lower().endswith('.png'):
                continue
            if name not in images:
                self._bad(
                    'missing files',
                    f'{self.split_dir / layout.MASKS / name}: no image of the same name in '
                    f'{self.split_dir / layout.IMAGES}',
                )
                continue
            image, mask = f'{layout.IMAGES}/{name}', f'{layout.MASKS}/{name}'
            real = listing.outside(image) or listing.outside(mask)
            if real is not None:
                self._bad(
                    'paths outside the dataset root',
                    f'{self.split_dir / layout.MASKS / name}: its image or mask resolves to '
                    f'{real}, outside the dataset root {self.root}; expected files (and '
                    'symlinks) inside it',
                )
                continue
            rows.append(_Row(image, mask, '', 0, False, None))
        return rows

    def _class_ids(self, mask: str, line: int) -> list[int] | None:
        """Foreground ids of a mask file (for on-the-fly category samples), None if bad."""
        try:
            array = layout.read_mask_png(self.split_dir / mask)
        except ValueError as error:
            self._bad('unreadable samples', f'{error}{self._where(line)}')
            return None
        return [i for i in present_ids(array) if i != BACKGROUND]

    # ------------------------------------------------------------------ records
    def _where(self, line: int) -> str:
        return f' (from {self._jsonl} line {line})' if self._jsonl is not None else ''

    def _record(self, index: int) -> Record:
        index = range(len(self))[index]
        category = int(self._categories[index])
        line = int(self._lines[index])
        mask = self.split_dir / self._masks[index]
        return Record(
            image=self.split_dir / self._images[index],
            mask=mask,
            prompt=self._prompts[index] if self._has_prompt[index] else None,
            category=category if category >= 0 else None,
            origin=f'{self._jsonl} line {line}' if self._jsonl is not None else str(mask),
        )

    @property
    def records(self) -> Sequence[Record]:
        """The :class:`Record` of every sample, in dataset order."""
        return _RecordView(self)

    def exact_boxes(self, index: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The boxes a sample was generated from, as its record holds them (files unread).

        Args:
            index: index of the sample (negative counts from the end).

        Returns:
            float32 [N, 4] boxes in pixels and int64 [N] vocabulary ids (a single-category
            sample: those of its class), or None for a sample without boxes. Reading the
            sample checks them against its image.

        Raises:
            IndexError: if ``index`` is out of range.

        .. versionadded:: 0.2
        """
        index = range(len(self))[index]
        found = self._boxes.get(index)
        category = int(self._categories[index])
        if found is None or category < 0:
            return found
        boxes, ids = found
        return boxes[ids == category], ids[ids == category]

    def __len__(self) -> int:
        """The number of samples.

        Returns:
            Length of the dataset.
        """
        return len(self._images)


__all__ = ('Record',)
