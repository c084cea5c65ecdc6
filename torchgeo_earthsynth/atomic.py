# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Atomic file writes: readers (and other writers) never see half a file."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = (
    'atomic_directory',
    'atomic_open',
    'atomic_write_bytes',
    'atomic_write_text',
    'current_umask',
    'fsync_file',
    'pid_temporary',
)


def current_umask() -> int:
    """The process's file-mode creation mask (read by setting it and restoring it).

    Returns:
        The umask, e.g. ``0o022``.
    """
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def pid_temporary(path: Path) -> Path:
    """``.<name>.tmp-<pid>`` beside ``path``: a temporary whose owner can be told alive or dead.

    Clean-up of interrupted saves
    (:func:`~torchgeo_earthsynth.lightning_modules.resume.clean_stale_temporaries`) removes
    those whose process no longer runs.

    Args:
        path: the destination.

    Returns:
        The temporary path.
    """
    return path.with_name(f'.{path.name}.tmp-{os.getpid()}')


@contextmanager
def atomic_open(
    path: Path, durable: bool = False, temporary: Path | None = None
) -> Iterator[IO[bytes]]:
    """Open a temporary file next to ``path``; on success rename it to ``path``.

    On any error the temporary file is removed and ``path`` is left as it was.

    Args:
        path: destination (its folder is created).
        durable: fsync before the rename (survives a crash, not only a killed process).
        temporary: the temporary file (e.g. :func:`pid_temporary`); default a unique name.

    Yields:
        The temporary file, open for binary writing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if temporary is None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.stem}.', suffix='.tmp')
    else:
        tmp = str(temporary)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp's 0600 would hide shared datasets
        with os.fdopen(fd, 'wb') as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_directory(
    path: Path, temporary: Path | None = None, replace: bool = True
) -> Iterator[Path]:
    """Fill a temporary folder next to ``path``; on success put it in place of ``path``.

    Readers see the old folder or the new one, never a half-written one. On any error the
    temporary folder is removed and ``path`` is left as it was.

    Args:
        path: destination folder (its parent is created).
        temporary: the temporary folder (e.g. :func:`pid_temporary`, emptied first);
            default a unique name.
        replace: replace an existing ``path`` (the old one is moved aside, then deleted);
            if False and ``path`` exists by the time the folder is complete (another
            process finished first), keep it and discard the new one.

    Yields:
        The empty temporary folder.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if temporary is None:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp'))
    else:
        tmp = temporary
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    try:
        yield tmp
        old = path.with_name(f'.{path.name}.old-{os.getpid()}')
        if replace and path.exists():
            path.rename(old)
        try:
            tmp.rename(path)
        except OSError:
            if replace or not path.exists():
                raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_bytes(data: bytes, path: Path, durable: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    Args:
        data: the file's content.
        path: destination.
        durable: fsync before the rename.
    """
    with atomic_open(path, durable) as f:
        f.write(data)


def atomic_write_text(path: Path, text: str, durable: bool = True) -> None:
    """Write UTF-8 ``text`` to ``path`` through a temporary file and a rename.

    Args:
        path: destination.
        text: the file's content.
        durable: fsync before the rename (safe with several writers and crashes).
    """
    atomic_write_bytes(text.encode('utf-8'), path, durable)


def fsync_file(path: Path) -> None:
    """Flush an already written file to disk.

    Args:
        path: the file.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
