# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""SyntheticBank's records: scanning its parts and JSONL, consolidating and pruning them."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from torchgeo_earthsynth.atomic import atomic_write_text
from torchgeo_earthsynth.datasets import layout
from torchgeo_earthsynth.datasets.earthsynth180k import EarthSynth180K
from torchgeo_earthsynth.vocabulary import NUM_CLASSES, ids_from_prompt

logger = logging.getLogger(__name__)

PARTS = 'parts'
CLAIMS = 'claims'
SUMMARY = 'summary.json'


@dataclass
class _Entry:
    """One stored sample: its JSONL records (the full record first, then category ones)."""

    records: list[dict[str, Any]]
    origin: str
    #: The part file and line number it was read from (None: the consolidated JSONL).
    part: tuple[Path, int] | None = None

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
    unreadable: set[int] = field(default_factory=set)  # entries whose files do not decode
    classes: Tensor = field(default_factory=lambda: torch.zeros(0, NUM_CLASSES, dtype=torch.bool))
    dataset: EarthSynth180K | None = None


class _BankRecords:
    """The records of a :class:`~torchgeo_earthsynth.bank.SyntheticBank`.

    Reads the consolidated JSONL and the writers' parts (a torn last line is a line still
    being written), merges them into the JSONL atomically, and removes what killed writers
    and damaged disks left.
    """

    split_dir: Path
    parts_dir: Path
    problems: Counter[str]

    @property
    def jsonl(self) -> Path:
        """The consolidated JSONL (``<split>/<split>.jsonl``)."""
        return layout.jsonl_path(self.split_dir)

    def _read_lines(self, path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
        for origin, _, value in self._numbered_lines(path):
            yield origin, value

    def _numbered_lines(self, path: Path) -> Iterator[tuple[str, int, dict[str, Any]]]:
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
            yield origin, number, value

    def _outside(self, records: list[dict[str, Any]]) -> str | None:
        """The first path of the records that would leave the split folder, if any."""
        for record in records:
            for field_name in ('file_name', 'mask_name'):
                path: str = record[field_name].replace('\\', '/')
                parts = path.split('/')
                if path.startswith('/') or '..' in parts or ':' in parts[0]:
                    return path
        return None

    def _scan(self) -> list[_Entry]:
        """Stored samples: the consolidated JSONL first, then the parts, first key wins."""
        self.problems.clear()
        entries: list[_Entry] = []
        for origin, record in self._read_lines(self.jsonl):
            if not all(isinstance(record.get(k), str) for k in layout.REQUIRED_FIELDS):
                self.problems['records missing fields'] += 1
                logger.warning('%s: skipped, needs %s', origin, list(layout.REQUIRED_FIELDS))
                continue
            if self._outside([record]) is not None:
                self.problems['records with paths outside the bank'] += 1
                logger.warning('%s: skipped, a path leaves %s', origin, self.split_dir)
                continue
            is_category = layout.CATEGORY_IMAGES in Path(record['file_name']).parts
            if is_category and entries and 'key' not in record:
                entries[-1].records.append(record)  # category records follow their sample
            else:
                entries.append(_Entry([record], origin))
        parts = sorted(self.parts_dir.glob('*.jsonl')) if self.parts_dir.is_dir() else []
        for part in parts:
            for origin, number, line in self._numbered_lines(part):
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
                outside = self._outside(records)
                if outside is not None:
                    self.problems['records with paths outside the bank'] += 1
                    logger.warning('%s: skipped, %r leaves %s', origin, outside, self.split_dir)
                    continue
                entries.append(_Entry(records, origin, (part, number)))
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
        atomic_write_text(self.jsonl, text)
        return kept

    def prune(self) -> dict[str, int]:
        """Delete what killed writers and damaged disks left.

        Samples whose PNGs do not decode lose their record (their part lines are dropped,
        so :meth:`done_keys` no longer lists them and a rerun makes them again) and their
        files; then temporary files, stale claims and PNGs no record names are deleted. Only
        call this while no writer runs (a running writer's newest PNGs have no record yet).

        Returns:
            ``{'temporary': n, 'orphans': m, 'unreadable': k}``: files deleted, and samples
            removed because they did not decode.
        """
        unreadable = self._drop_unreadable()
        used = {p for entry in self._scan() for p in entry.paths()}
        counts = {'temporary': 0, 'orphans': 0, 'unreadable': unreadable}
        folders = (layout.IMAGES, layout.MASKS, layout.CATEGORY_IMAGES, layout.CATEGORY_MASKS)
        for claim in (
            (self.split_dir / CLAIMS).glob('*') if (self.split_dir / CLAIMS).is_dir() else []
        ):
            claim.unlink(missing_ok=True)  # no writer runs: every claim is stale
            counts['temporary'] += 1
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
        if unreadable:
            self._consolidate()
        return counts

    def _decodes(self, entry: _Entry) -> bool:
        for relative in entry.paths():
            path = self.split_dir / relative
            try:
                with layout.open_image(path) as image:
                    layout.decode_image(image, path)
            except ValueError as error:
                logger.warning('%s: %s', entry.origin, error)
                return False
        return True

    def _drop_unreadable(self) -> int:
        """Remove the samples whose files do not decode; return how many."""
        bad = [entry for entry in self._scan() if not self._decodes(entry)]
        if not bad:
            return 0
        keys = {entry.key for entry in bad if entry.key is not None}
        lines = {entry.part for entry in bad if entry.part is not None}
        for entry in bad:
            for relative in entry.paths():
                (self.split_dir / relative).unlink(missing_ok=True)
        for part in sorted(self.parts_dir.glob('*.jsonl')):
            drop = set()
            for _, number, line in self._numbered_lines(part):
                records = line.get('records')
                key = records[0].get('key') if isinstance(records, list) and records else None
                if (part, number) in lines or (isinstance(key, int | str) and key in keys):
                    drop.add(number)
            if drop:
                text = part.read_text().split('\n')[:-1]  # the torn tail, if any, goes too
                kept = [line for number, line in enumerate(text, start=1) if number not in drop]
                atomic_write_text(part, ''.join(line + '\n' for line in kept))
        return len(bad)


__all__ = (
    'CLAIMS',
    'PARTS',
    'SUMMARY',
)
