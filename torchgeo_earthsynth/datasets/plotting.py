# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Plotting EarthSynth sample dicts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import Tensor

from torchgeo_earthsynth.vocabulary import NUM_CLASSES, PALETTE, VOCABULARY, colorize, present_ids


def plot_sample(
    sample: dict[str, Any], show_titles: bool = True, suptitle: str | None = None
) -> Figure:
    """Plot an EarthSynth sample dict (shared by every dataset of this package).

    Args:
        sample: dict with ``image`` [3, H, W] 0..255, ``mask`` [H, W], optional ``prompt``
            and ``prediction`` [H, W].
        show_titles: flag indicating whether to show titles above each panel.
        suptitle: optional string to use as a suptitle.

    Returns:
        A matplotlib Figure: the image, the coloured mask (and prediction) with a legend of
        the classes present, and the prompt below.
    """
    tensor = torch.as_tensor(sample['image']).detach().cpu().float()
    image = tensor.permute(1, 2, 0).clamp(0, 255).numpy() / 255
    masks = [('Mask', sample['mask'])]
    if 'prediction' in sample:
        masks.append(('Prediction', sample['prediction']))
    fig, axs = plt.subplots(1, 1 + len(masks), figsize=(4 * (1 + len(masks)), 4.6))
    axs[0].imshow(image)
    present: set[int] = set()
    for ax, (title, mask) in zip(axs[1:], masks):
        mask = torch.as_tensor(mask).detach().cpu()
        ax.imshow(colorize(mask), interpolation='nearest')
        present |= {i for i in present_ids(mask) if 0 <= i < NUM_CLASSES}
        if show_titles:
            ax.set_title(title)
    for ax in axs:
        ax.axis('off')
    if show_titles:
        axs[0].set_title('Image')
    handles = [Patch(color=PALETTE[i] / 255, label=VOCABULARY[i]) for i in sorted(present)]
    axs[-1].legend(handles=handles, loc='center left', bbox_to_anchor=(1.0, 0.5), fontsize=8)
    if 'prompt' in sample:
        fig.text(0.5, 0.02, str(sample['prompt']), ha='center', fontsize=9, wrap=True)
    if suptitle is not None:
        fig.suptitle(suptitle)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def plot_panels(
    panels: Sequence[tuple[str, Tensor]], show_titles: bool = True, suptitle: str | None = None
) -> Figure:
    """One row of titled images, each float [3, H, W] in 0..255 (clipped for display).

    Args:
        panels: ``(title, image)`` pairs, left to right.
        show_titles: title each panel.
        suptitle: figure title.

    Returns:
        The figure.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3), squeeze=False)
    for ax, (title, image) in zip(axes[0], panels):
        pixels = (image.detach().cpu().float().permute(1, 2, 0) / 255).clamp(0, 1)
        ax.imshow(pixels.numpy(), interpolation='nearest')
        ax.axis('off')
        if show_titles:
            ax.set_title(title)
    if suptitle is not None:
        fig.suptitle(suptitle)
    return fig


def colorized(mask: Tensor) -> Tensor:
    """A class-index mask [H, W] in the palette's colours, float [3, H, W] 0..255."""
    return torch.from_numpy(colorize(torch.as_tensor(mask).cpu())).permute(2, 0, 1).float()


__all__ = ('colorized', 'plot_panels', 'plot_sample')
