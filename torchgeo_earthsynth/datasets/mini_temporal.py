# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""EarthSynthMiniTemporal: the mini corpus's places over dates, some gaining buildings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from torchgeo_earthsynth.compat import NonGeoDataset
from torchgeo_earthsynth.conditions import METADATA_FIELDS
from torchgeo_earthsynth.datasets.mini import EarthSynthMini, render_scene
from torchgeo_earthsynth.vocabulary import CLASS_IDS, prompt_from_mask

__all__ = ('EarthSynthMiniTemporal', 'add_buildings')

_YEAR, _MONTH = METADATA_FIELDS.index('year'), METADATA_FIELDS.index('month')


def add_buildings(rng: np.random.Generator, mask: np.ndarray, count: int) -> np.ndarray:
    """New buildings on land: ``count`` rectangles of the building class, never on water.

    Args:
        rng: the draws of their sizes and places.
        mask: uint8 [H, W] vocabulary ids (not changed).
        count: how many buildings to try to place.

    Returns:
        A new mask with the buildings.
    """
    edited = mask.copy()
    size = mask.shape[0]
    for _ in range(count):
        h, w = rng.integers(max(2, size // 10), max(3, size // 4), size=2)
        y, x = rng.integers(0, size - h), rng.integers(0, size - w)
        footprint = edited[y : y + h, x : x + w]
        footprint[footprint != CLASS_IDS['water']] = CLASS_IDS['building']
    return edited


class EarthSynthMiniTemporal(NonGeoDataset):
    """Sequences of the mini corpus: ``frames`` earlier images of a place and the one to predict.

    Each scene of :class:`EarthSynthMini` becomes ``frames`` earlier images, one a year
    before the target's year, each in a month of its own (the season shifts vegetation's
    colour, as in the mini corpus), all rendered from the scene's mask; the target keeps the
    scene's date. With probability ``change_probability`` the place gains buildings between
    the last frame and the target, and ``change`` marks exactly the pixels whose class
    changed (LEVIR-CD-style 0/1). Seeded per scene: a sample is the same on every read.

    Sample keys: ``frames`` float32 [3, T, H, W] in 0..255 (oldest first), ``frame_metadata``
    float32 [7, T], ``image`` float32 [3, H, W] (the target), ``metadata`` [7] (the target's
    place and date), ``mask`` (the target's), ``before_mask`` (the frames'), ``change``
    int64 [H, W], ``prompt`` (the target's classes).

    .. versionadded:: 0.4
    """

    def __init__(
        self,
        root: str | Path | None = None,
        split: Literal['train', 'val'] = 'train',
        frames: int = 3,
        change_probability: float = 0.5,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        seed: int = 0,
        size: int = 64,
        num_train: int = 256,
        num_val: int = 64,
    ) -> None:
        """Initialize a new EarthSynthMiniTemporal instance, generating the corpus if needed.

        Args:
            root: parent folder of the cached mini corpus (default: the cache folder).
            split: one of ``train`` or ``val``.
            frames: earlier images per sequence (T >= 1).
            change_probability: share of places that gain buildings before the target.
            transforms: a function/transform applied to each sample dict.
            seed: random seed of the corpus and of the sequences.
            size: tile size in pixels.
            num_train: number of training places.
            num_val: number of validation places.

        Raises:
            ValueError: if ``frames`` < 1 or ``change_probability`` is not in [0, 1].
        """
        if frames < 1:
            raise ValueError(f'frames must be >= 1, got {frames}')
        if not 0 <= change_probability <= 1:
            raise ValueError(f'change_probability must be in [0, 1], got {change_probability}')
        self.scenes = EarthSynthMini(root, split, 'full', None, seed, size, num_train, num_val)
        self.split, self.frames, self.seed = split, frames, seed
        self.change_probability = change_probability
        self.transforms = transforms

    def __len__(self) -> int:
        """Return the number of sequences."""
        return len(self.scenes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Return one sequence.

        Args:
            index: index of the place.

        Returns:
            The sample (see the class docstring).
        """
        scene = self.scenes[index]
        prefix = self.scenes.records[index].image.name.split('_')[0] + '_'
        rng = np.random.default_rng([self.seed, ('train', 'val').index(self.split), index, 28])
        after = scene['mask'].numpy().astype(np.uint8)
        before = after
        if rng.random() < self.change_probability:
            after = add_buildings(rng, before, int(rng.integers(1, 4)))
        target = scene['metadata'].float()
        history = target[:, None].repeat(1, self.frames)
        history[_YEAR] = target[_YEAR] - torch.arange(self.frames, 0, -1)
        history[_MONTH] = torch.from_numpy(rng.integers(1, 13, self.frames)).float()
        images = []
        for t in range(self.frames + 1):
            mask, values = (before, history[:, t]) if t < self.frames else (after, target)
            fields = dict(zip(METADATA_FIELDS, values.tolist()))
            images.append(render_scene(rng, prefix, mask, fields))
        pixels = torch.from_numpy(np.stack(images)).permute(3, 0, 1, 2).float()  # [3, T+1, H, W]
        sample = {
            'frames': pixels[:, : self.frames],
            'frame_metadata': history,
            'image': pixels[:, -1],
            'metadata': target,
            'mask': torch.from_numpy(after).long(),
            'before_mask': torch.from_numpy(before).long(),
            'change': torch.from_numpy(after != before).long(),
            'prompt': prompt_from_mask(after),
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def plot(self, sample: dict[str, Any], suptitle: str | None = None) -> Figure:
        """Plot a sequence: its frames with their dates, the target and its change mask.

        Args:
            sample: a sample of this dataset (``prediction`` [3, H, W] is shown if present).
            suptitle: optional figure title.

        Returns:
            A matplotlib Figure.
        """
        frames = sample['frames']
        panels = [frames[:, t] for t in range(frames.shape[1])] + [sample['image']]
        titles = [
            f'{int(year)}-{int(month):02d}'
            for year, month in sample['frame_metadata'][[_YEAR, _MONTH]].T.tolist()
        ]
        target = sample['metadata']
        titles.append(f'target {int(target[_YEAR])}-{int(target[_MONTH]):02d}')
        if 'prediction' in sample:
            panels.append(sample['prediction'])
            titles.append('prediction')
        fig, axes = plt.subplots(1, len(panels) + 1, figsize=(2.4 * (len(panels) + 1), 2.6))
        for ax, image, title in zip(axes, panels, titles):
            ax.imshow(image.permute(1, 2, 0).clamp(0, 255).byte().numpy())
            ax.set_title(title, fontsize=8)
        axes[-1].imshow(sample['change'].numpy(), cmap='gray', vmin=0, vmax=1)
        axes[-1].set_title('change', fontsize=8)
        for ax in axes:
            ax.axis('off')
        if suptitle is not None:
            fig.suptitle(suptitle)
        return fig
