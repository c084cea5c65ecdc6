# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Validation figures of the diffusion tasks: the sample grid, and where figures are logged."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import Tensor

from torchgeo_earthsynth.vocabulary import PROMPT_PREFIX, colorize


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


__all__ = ('log_figure', 'output_dir', 'sample_grid')
