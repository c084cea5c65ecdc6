# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Resuming training: RNG streams in checkpoints, the run's seed, stale temporary files."""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

__all__ = (
    'TEMPORARY',
    'RNGState',
    'clean_stale_temporaries',
    'restore_rng_states',
    'rng_states',
    'run_seed',
)

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


def _generators(root: object, prefix: str, seen: set[int]) -> Iterator[tuple[str, torch.Generator]]:
    """``torch.Generator`` attributes of ``root`` and of the objects it holds, by path."""
    if id(root) in seen:
        return
    seen.add(id(root))
    values: dict[str, Any] = dict(vars(root)) if hasattr(root, '__dict__') else {}
    if isinstance(root, torch.nn.Module):
        values.update(root.named_children())
    for name, value in sorted(values.items()):
        path = f'{prefix}.{name}'
        if isinstance(value, torch.Generator):
            yield path, value
        elif isinstance(value, torch.nn.Module) or (
            hasattr(value, '__dict__') and type(value).__module__.startswith('torchgeo_earthsynth')
        ):
            yield from _generators(value, path, seen)


def _numpy_state() -> list[Any]:
    """NumPy's global state with its key array as a tensor (loads with weights_only).

    The uint32 keys are stored as int64: torch < 2.5 cannot pickle uint32 storages.
    """
    name, keys, *rest = np.random.get_state()
    return [
        name,
        torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        *(r.item() if hasattr(r, 'item') else r for r in rest),
    ]


def _stream_owners(trainer: pl.Trainer | None) -> dict[str, torch.Generator]:
    """The generators held by the trainer's LightningModule and datamodule, by path."""
    if trainer is None:
        return {}
    seen: set[int] = set()
    found = dict(_generators(trainer.lightning_module, 'model', seen))
    datamodule = getattr(trainer, 'datamodule', None)
    if datamodule is not None:
        found.update(_generators(datamodule, 'data', seen))
    return found


def rng_states(trainer: pl.Trainer | None) -> dict[str, Any]:
    """The current state of every random stream of a run.

    Args:
        trainer: whose module's and datamodule's generators to include (None: globals only).

    Returns:
        Torch (CPU, CUDA), NumPy, Python and module generator states (weights_only-loadable).
    """
    return {
        'torch': torch.get_rng_state(),
        'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        'numpy': _numpy_state(),
        'python': random.getstate(),
        'generators': {k: g.get_state() for k, g in _stream_owners(trainer).items()},
    }


def restore_rng_states(trainer: pl.Trainer | None, state: dict[str, Any]) -> None:
    """Set every random stream to a state of :func:`rng_states`.

    Args:
        trainer: whose module's and datamodule's generators to set.
        state: from :func:`rng_states`.
    """
    torch.set_rng_state(state['torch'])
    if state['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    name, keys, *rest = state['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(state['python'])
    generators = _stream_owners(trainer)
    for path, generator_state in state['generators'].items():
        if path in generators:
            generators[path].set_state(generator_state)
        else:
            logger.warning('the checkpoint has a random generator %s this run lacks', path)


class RNGState(Callback):
    """Save every random stream in checkpoints and restore it on resume.

    Torch (CPU and CUDA), NumPy and Python's ``random``, plus the ``torch.Generator`` s our
    modules hold (the LightningModule's, the datamodule's and their transforms', e.g.
    CF-Comp's), so that a run resumed from a checkpoint draws the same noise, timesteps,
    shuffles and compositions as the run that was not interrupted. The states are applied
    when training starts, after the sanity check, so that check draws nothing from them.
    Our diffusion tasks do this themselves; list this callback for other tasks (e.g.
    TorchGeo's, downstream).

    .. versionadded:: 0.1
    """

    def __init__(self) -> None:
        """Initialize a new RNGState instance."""
        self._pending: dict[str, Any] | None = None
        self._trainer: pl.Trainer | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Remember the trainer, to find the datamodule's generators when saving."""
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        """The current state of every stream.

        Returns:
            Picklable states (tensors, tuples).
        """
        return rng_states(self._trainer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the saved states until training starts.

        Args:
            state_dict: from :meth:`state_dict`.
        """
        self._pending = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Apply the states of the checkpoint resumed from, if any."""
        state, self._pending = self._pending, None
        if state is not None:
            restore_rng_states(self._trainer, state)
