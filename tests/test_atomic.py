# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Tests for the atomic file writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from torchgeo_earthsynth.atomic import (
    atomic_directory,
    atomic_open,
    atomic_write_bytes,
    atomic_write_text,
    pid_temporary,
)


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


def test_pid_temporary_names_its_process(tmp_path: Path) -> None:
    path = tmp_path / 'last.ckpt'
    temporary = pid_temporary(path)
    assert temporary == tmp_path / f'.last.ckpt.tmp-{os.getpid()}'
    with pytest.raises(RuntimeError, match='interrupted'):
        with atomic_open(path, temporary=temporary) as f:
            f.write(b'half')
            assert temporary.exists()
            raise RuntimeError('interrupted')
    assert not temporary.exists() and not path.exists()
    with atomic_open(path, temporary=temporary) as f:
        f.write(b'whole')
    assert path.read_bytes() == b'whole' and not temporary.exists()


def test_directory_is_replaced_whole(tmp_path: Path) -> None:
    target = tmp_path / 'export'
    target.mkdir()
    (target / 'old.txt').write_text('old')
    with atomic_directory(target, pid_temporary(target)) as folder:
        assert folder != target and not any(folder.iterdir())
        (folder / 'new.txt').write_text('new')
        assert (target / 'old.txt').exists()  # readers still see the old folder
    assert [p.name for p in target.iterdir()] == ['new.txt']
    assert [p.name for p in tmp_path.iterdir()] == ['export']  # nothing left beside it


def test_failed_directory_keeps_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / 'export'
    target.mkdir()
    (target / 'old.txt').write_text('old')
    with pytest.raises(RuntimeError, match='interrupted'):
        with atomic_directory(target) as folder:
            (folder / 'half.txt').write_text('half')
            raise RuntimeError('interrupted')
    assert [p.name for p in target.iterdir()] == ['old.txt']
    assert [p.name for p in tmp_path.iterdir()] == ['export']


def test_directory_without_replace_keeps_what_another_process_finished(tmp_path: Path) -> None:
    target = tmp_path / 'corpus'
    with atomic_directory(target, replace=False) as folder:
        (folder / 'mine.txt').write_text('mine')
        target.mkdir()  # another process finishes first
        (target / 'theirs.txt').write_text('theirs')
    assert [p.name for p in target.iterdir()] == ['theirs.txt']
    assert [p.name for p in tmp_path.iterdir()] == ['corpus']
