# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Does a metadata-conditioned generator follow the season as the mini corpus does?"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor

from torchgeo_earthsynth.conditions import METADATA_FIELDS
from torchgeo_earthsynth.datasets import EarthSynth180K
from torchgeo_earthsynth.datasets.mini import green_chroma, greenness, seasonal_extremes

__all__ = ('MetadataGenerator', 'corpus_season_shift', 'season_shift')


class MetadataGenerator(Protocol):
    """Anything with ``Synthesizer.generate``'s prompt + metadata form."""

    def generate(
        self, masks: None, prompts: Sequence[str], seeds: Sequence[int], *, metadata: Tensor
    ) -> Tensor:
        """[B, 3, H, W] images in 0..255 for prompts, per-sample seeds and metadata."""
        ...


def season_shift(
    synthesizer: MetadataGenerator, prompts: Sequence[str], metadata: Tensor, seeds: Sequence[int]
) -> Tensor:
    """Green chromaticity of images generated at midsummer minus at midwinter, per sample.

    Each request is generated twice with the same prompt and seed, its ``month`` set to its
    hemisphere's midsummer and midwinter (:func:`~torchgeo_earthsynth.datasets.mini.
    seasonal_extremes`), so the pair differs by the season alone.

    Args:
        synthesizer: a generator taking ``prompt`` + ``metadata``.
        prompts: one prompt per request.
        metadata: float32 [B, 7] in physical units, one row per prompt.
        seeds: one seed per request.

    Returns:
        float32 [B]: mean ``G / (R + G + B)`` of the summer image minus the winter one.
    """
    summer, winter = seasonal_extremes(metadata)
    hot = synthesizer.generate(None, list(prompts), seeds=seeds, metadata=summer)
    cold = synthesizer.generate(None, list(prompts), seeds=seeds, metadata=winter)
    return green_chroma(hot) - green_chroma(cold)


def corpus_season_shift(dataset: EarthSynth180K, extreme: float = 0.25) -> float:
    """Mean green chromaticity of real scenes near midsummer minus near midwinter.

    Args:
        dataset: a corpus whose samples carry ``metadata``, e.g.
            :class:`~torchgeo_earthsynth.datasets.EarthSynthMini`.
        extreme: scenes with :func:`~torchgeo_earthsynth.datasets.mini.greenness` above
            ``1 - extreme`` count as summer, below ``extreme`` as winter.

    Returns:
        The difference of the two means.

    Raises:
        ValueError: if the dataset holds no summer or no winter scene.
    """
    month, lat = METADATA_FIELDS.index('month'), METADATA_FIELDS.index('lat')
    summer: list[Tensor] = []
    winter: list[Tensor] = []
    for i in range(len(dataset)):
        sample = dataset[i]
        green = greenness(float(sample['metadata'][month]), float(sample['metadata'][lat]))
        chroma = green_chroma(sample['image'][None].float())
        if green > 1 - extreme:
            summer.append(chroma)
        elif green < extreme:
            winter.append(chroma)
    if not summer or not winter:
        raise ValueError(
            f'{len(summer)} summer and {len(winter)} winter scenes: need both to compare'
        )
    return float(torch.cat(summer).mean() - torch.cat(winter).mean())
