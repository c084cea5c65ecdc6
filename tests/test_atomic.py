# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Tests for the atomic file writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchgeo_earthsynth.atomic import atomic_open, atomic_write_bytes, atomic_write_text


def test_write_replaces_whole_files(tmp_path: Path) -> None:
    path = tmp_path / 'sub' / 'a.json'
    atomic_write_text(path, 'first\n')
    atomic_write_bytes(b'second', path, durable=False)
    assert path.read_bytes() == b'second'
    assert [p.name for p in path.parent.iterdir()] == ['a.json']  # no temporary left


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / 'a.txt'
    path.write_text('old')
    with pytest.raises(RuntimeError, match='interrupted'):
        with atomic_open(path) as f:
            f.write(b'half a fi')
            raise RuntimeError('interrupted')
    assert path.read_text() == 'old'
    assert [p.name for p in tmp_path.iterdir()] == ['a.txt']
