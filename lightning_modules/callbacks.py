# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Callbacks and helpers of the diffusion tasks: diffusers export, atomic checkpoints, grids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import matplotlib.pyplot as plt
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only
from matplotlib.figure import Figure
from torch import Tensor

from torchgeo_earthsynth.atomic import atomic_open, pid_temporary
from torchgeo_earthsynth.lightning_modules.resume import clean_stale_temporaries
from torchgeo_earthsynth.vocabulary import PROMPT_PREFIX, colorize

__all__ = ('AtomicCheckpointIO', 'DiffusersExport', 'log_figure', 'output_dir', 'sample_grid')


def output_dir(trainer: pl.Trainer) -> Path:
    """The run's log folder, or ``default_root_dir`` when loggers are off (``fast_dev_run``)."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def log_figure(module: pl.LightningModule, figure: Figure, tag: str) -> Path:
    """Save a figure under ``<log dir>/samples`` and log it to the module's loggers.

    Args:
        module: the LightningModule (its trainer gives the folder and the step).
        figure: the figure; closed after saving.
        tag: the loggers' name for it (e.g. ``val/samples``).

    Returns:
        The PNG written (``val_step<global step>.png``).
    """
    step = module.global_step
    out = output_dir(module.trainer) / 'samples'
    out.mkdir(parents=True, exist_ok=True)
    path = out / f'val_step{step:06d}.png'
    figure.savefig(path, dpi=80)
    plt.close(figure)
    for logger in module.loggers:
        experiment = getattr(logger, 'experiment', None)
        if experiment is not None and hasattr(experiment, 'add_figure'):  # TensorBoard
            experiment.add_image(tag, plt.imread(path)[..., :3], step, dataformats='HWC')
        elif hasattr(logger, 'log_image'):  # W&B, Neptune...
            logger.log_image(key=tag, images=[str(path)], step=step)
    return path


def sample_grid(
    masks: Tensor, generated: Tensor, real: Tensor | None, prompts: list[str], title: str = ''
) -> Figure:
    """A figure with one row per sample: condition | generated | real.

    Args:
        masks: [N, H, W] vocabulary ids.
        generated: [N, 3, H, W] 0..255.
        real: [N, 3, H, W] 0..255 or None.
        prompts: N prompts (shown under the rows' first panel).
        title: figure title.

    Returns:
        The figure.
    """
    cols = 3 if real is not None else 2
    fig, axs = plt.subplots(len(masks), cols, figsize=(2.2 * cols, 2.2 * len(masks)), squeeze=False)
    for i in range(len(masks)):
        panels = [colorize(masks[i]), generated[i].detach().cpu().permute(1, 2, 0) / 255]
        if real is not None:
            panels.append(real[i].detach().cpu().permute(1, 2, 0) / 255)
        for j, panel in enumerate(panels):
            axs[i, j].imshow(
                torch.as_tensor(panel).clamp(0, 1).numpy() if j else panel, interpolation='nearest'
            )
            axs[i, j].set_xticks([])
            axs[i, j].set_yticks([])
        axs[i, 0].set_ylabel(prompts[i].removeprefix(PROMPT_PREFIX)[:28], fontsize=6)
    for j, name in enumerate(['condition', 'generated', 'real'][:cols]):
        axs[0, j].set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


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
        from torchgeo_earthsynth.lightning_modules.diffusion_task import DiffusionTask

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
