# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Callbacks and helpers of the diffusion tasks: diffusers export, atomic checkpoints, grids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from torchgeo_earthsynth.atomic import atomic_open, pid_temporary

from .diffusion_task import DiffusionTask
from .figures import output_dir
from .resume import clean_stale_temporaries

__all__ = ('AtomicCheckpointIO', 'DiffusersExport')


class DiffusersExport(Callback):
    """Write the ControlNet in diffusers format (safetensors + model card) during training.

    Args:
        dirpath: export folder (default ``<log_dir>/export``).
        every_n_train_steps: also export every this many steps (None: only at the end).
        full_pipeline: see :meth:`DiffusionTask.save_pretrained`.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        dirpath: str | None = None,
        every_n_train_steps: int | None = None,
        full_pipeline: bool | None = None,
    ) -> None:
        self.dirpath = dirpath
        self.every_n_train_steps = every_n_train_steps
        self.full_pipeline = full_pipeline
        self.last_export: Path | None = None
        self._exported_step = -1

    def _target(self, trainer: pl.Trainer) -> Path:
        return Path(self.dirpath) if self.dirpath else output_dir(trainer) / 'export'

    @rank_zero_only
    def _export(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not isinstance(module, DiffusionTask):
            raise TypeError(f'DiffusersExport needs a DiffusionTask, got {type(module)}')
        self.last_export = module.save_pretrained(self._target(trainer), self.full_pipeline)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Export every ``every_n_train_steps``."""
        n, step = self.every_n_train_steps, trainer.global_step
        # Under gradient accumulation every micro-batch of a step ends here: export once.
        if n and step > 0 and step % n == 0 and step != self._exported_step:
            self._exported_step = step
            self._export(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Export the final weights (unless this step is exported already)."""
        if trainer.global_step != self._exported_step:
            self._exported_step = trainer.global_step
            self._export(trainer, pl_module)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoint I/O that writes to a temporary file, syncs it and renames it in place.

    A run killed while saving leaves the previous checkpoint intact and never a truncated
    file that loads. Use with ``Trainer(plugins=[AtomicCheckpointIO()])``.

    .. versionadded:: 0.1
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Save ``checkpoint`` to ``path`` atomically."""
        if storage_options is not None:
            raise TypeError('AtomicCheckpointIO does not take storage_options')
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temporaries(target.parent)  # of saves killed before their rename
        with atomic_open(target, durable=True, temporary=pid_temporary(target)) as f:
            torch.save(checkpoint, f)
