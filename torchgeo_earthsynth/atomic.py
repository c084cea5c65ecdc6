# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Atomic file writes: readers (and other writers) never see half a file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = ('atomic_open', 'atomic_write_bytes', 'atomic_write_text', 'fsync_file')


@contextmanager
def atomic_open(path: Path, durable: bool = False) -> Iterator[IO[bytes]]:
    """Open a unique temporary file next to ``path``; on success rename it to ``path``.

    On any error the temporary file is removed and ``path`` is left as it was.

    Args:
        path: destination (its folder is created).
        durable: fsync before the rename (survives a crash, not only a killed process).

    Yields:
        The temporary file, open for binary writing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.stem}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
