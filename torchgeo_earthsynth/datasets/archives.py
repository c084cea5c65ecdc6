# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The released EarthSynth-180K archives: finding their parts and extracting them safely."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from torchgeo_earthsynth.atomic import current_umask
from torchgeo_earthsynth.datasets import layout

__all__ = ('extract_archive', 'find_archives')

# ``train.zip``, ``train.zip.part00``, ``train.zip_part_aa`` (as released), ``train.zip.001``
_ARCHIVE = re.compile(
    r'^(?P<base>.+?)\.zip(?:(?:[._-]?part[._-]?|\.)(?P<part>[0-9a-z]+))?$', re.IGNORECASE
)


def find_archives(folder: Path) -> dict[str, list[Path]]:
    """Zip archives under ``folder``, parts grouped and in order, by name.

    Args:
        folder: e.g. ``<root>/archives`` (may not exist).

    Returns:
        Archive name (relative to ``folder``, without ``.zip``) -> its parts, in order.
    """
    groups: dict[str, list[Path]] = {}
    if folder.is_dir():
        for path in sorted(folder.rglob('*')):
            match = _ARCHIVE.match(path.name)
            if match and path.is_file() and '.cache' not in path.relative_to(folder).parts:
                key = str(path.parent.relative_to(folder) / match['base'])
                groups.setdefault(key, []).append(path)

    def order(path: Path) -> tuple[int, str]:
        part = _ARCHIVE.match(path.name)['part'] or ''  # type: ignore[index]
        return len(part), part.lower()  # part2 < part10, aa < ab

    return {key: sorted(parts, key=order) for key, parts in groups.items()}


def extract_archive(root: Path, base: str, parts: list[Path], splits: Sequence[str]) -> None:
    """Join the parts of one archive, extract it, move its split folders into place.

    Args:
        root: the dataset root, where ``<split>/`` folders go.
        base: the archive's name (from :func:`find_archives`).
        parts: its parts, in order.
        splits: split names, to tell which folder is which.

    Raises:
        ValueError: if the parts are not one zip file, a member would extract outside
            ``root``, or no folder holds the EarthSynth-180K layout.
    """
    root.mkdir(parents=True, exist_ok=True)
    if len(parts) == 1 and parts[0].name.lower().endswith('.zip'):
        archive, joined = parts[0], False
    else:
        archive, joined = root / f'.{Path(base).name}.zip.joined', True
        with archive.open('wb') as out:
            for part in parts:
                with part.open('rb') as f:
                    shutil.copyfileobj(f, out, 1 << 24)
    staging = Path(tempfile.mkdtemp(dir=root, prefix='.extract-'))
    staging.chmod(0o777 & ~current_umask())  # may become a split folder: not 0700
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    if not (staging / name).resolve().is_relative_to(staging.resolve()):
                        raise ValueError(f'{archive}: member {name!r} would extract outside {root}')
                zf.extractall(staging)
        except zipfile.BadZipFile as error:
            names = ', '.join(p.name for p in parts)
            raise ValueError(
                f'{archive}: not a zip archive ({error}); expected {names} to be (the '
                'ordered parts of) one zip file'
            ) from error
        _place(root, staging, Path(base).name, archive, splits)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if joined:
            archive.unlink(missing_ok=True)


def _place(root: Path, staging: Path, base: str, archive: Path, splits: Sequence[str]) -> None:
    """Move every folder holding ``images/`` and ``masks/`` to ``root/<split>``."""
    found, frontier = [], [staging]
    for _ in range(4):  # the archive root and up to three folders down
        deeper = []
        for folder in frontier:
            if (folder / layout.IMAGES).is_dir() and (folder / layout.MASKS).is_dir():
                found.append(folder)
            else:
                deeper += sorted(p for p in folder.iterdir() if p.is_dir())
        frontier = deeper
    if not found:
        raise ValueError(
            f'{archive}: holds no folder with {layout.IMAGES}/ and {layout.MASKS}/; '
            'expected the EarthSynth-180K layout'
        )
    for folder in found:
        split = folder.name if folder.name in splits else None
        split = split or next((s for s in splits if base.lower().endswith(s)), None)
        if split is None:
            raise ValueError(
                f'{archive}: cannot tell the split of {folder.relative_to(staging)}; '
                f'expected a folder or an archive named after one of {splits}'
            )
        _move_merge(folder, root / split)


def _move_merge(source: Path, target: Path) -> None:
    """Move ``source`` to ``target``, merging into folders that already exist."""
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        return
    for child in source.iterdir():
        if child.is_dir() and (target / child.name).is_dir():
            _move_merge(child, target / child.name)
        else:
            os.replace(child, target / child.name)
