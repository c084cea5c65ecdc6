# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Resuming training: the run's seed for the model, and stale temporary checkpoint files."""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from typing import Final

__all__ = ('TEMPORARY', 'clean_stale_temporaries', 'run_seed')

logger = logging.getLogger(__name__)

#: ``.<name>.tmp-<pid>`` (and ``.old-<pid>``): what an atomic save writes around its rename.
TEMPORARY: Final = re.compile(r'^\..+\.(?:tmp|old)-(?P<pid>\d+)$')


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def clean_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files (or folders) of interrupted atomic saves in ``folder``.

    A save killed between writing ``.<name>.tmp-<pid>`` and renaming it leaves that file
    behind for good; one whose process no longer runs on this machine is stale. Files of
    live processes (another rank saving now) are left alone.

    Args:
        folder: where checkpoints (or exports) are saved; need not exist.

    Returns:
        The paths deleted.
    """
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = TEMPORARY.match(path.name)
        if match is None:
            continue
        pid = int(match['pid'])
        if pid == os.getpid() or _alive(pid):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
        logger.info('removed %s, left by an interrupted save (process %d)', path, pid)
    return removed


def run_seed(seed: int | None) -> int:
    """The seed a model initialises and samples with.

    Args:
        seed: the model's own ``seed`` argument (None: not given).

    Returns:
        ``seed`` when given; else the run's seed (``seed_everything``, e.g. the CLI's
        ``--seed_everything``, which Lightning records in ``PL_GLOBAL_SEED``); else 0.
    """
    if seed is not None:
        return int(seed)
    return int(os.environ.get('PL_GLOBAL_SEED', 0))
