# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Where the package caches what it builds (mini corpus, tokenizer files)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ('default_cache_dir',)


def default_cache_dir() -> Path:
    """``$EARTHSYNTH_CACHE`` or ``~/.cache/torchgeo_earthsynth``."""
    env = os.environ.get('EARTHSYNTH_CACHE')
    return Path(env) if env else Path.home() / '.cache' / 'torchgeo_earthsynth'
