# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Which layouts a synthetic bank asks the generator to render: uniform, balanced, CF-Comp."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import default_collate

from torchgeo_earthsynth.vocabulary import BACKGROUND, VOCABULARY, present_ids

#: How layouts are drawn from the labelled samples (see :func:`draw_layouts`).
LayoutDraw = Literal['uniform', 'balanced', 'cf-comp']


def _foreground_ids(mask: Tensor) -> list[int]:
    return [i for i in present_ids(mask) if i != BACKGROUND] or [BACKGROUND]


def draw_layouts(
    samples: Sequence[Mapping[str, Any]],
    count: int,
    draw: LayoutDraw = 'cf-comp',
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Draw ``count`` layouts (mask + prompt) for the generator from labelled samples.

    * ``uniform``: samples drawn uniformly (without replacement while there are enough);
    * ``balanced``: each sample drawn with the inverse frequency of its rarest class, so a
      class in few scenes gets about the share of a common one (EarthSynth's category
      augmentation);
    * ``cf-comp``: balanced draws, each then given one category region of a donor chosen by
      :class:`~torchgeo_earthsynth.transforms.CounterfactualComposition` (rarity-weighted,
      region paste only), its prompt recomputed from the new mask.

    Args:
        samples: sample dicts with ``image``, ``mask`` (vocabulary ids), ``prompt``,
            ``categories`` and ``source``, e.g. a corpus' training scenes.
        count: layouts to draw.
        draw: one of ``uniform``, ``balanced`` or ``cf-comp``.
        seed: seed of the draws.

    Returns:
        ``count`` sample dicts (``image`` is the real scene the layout started from).

    Raises:
        ValueError: if there are no samples, ``count`` < 1 or ``draw`` is unknown.

    .. versionadded:: 0.2
    """
    if not samples or count < 1:
        raise ValueError(f'draw_layouts needs samples and count >= 1, got {len(samples)}, {count}')
    generator = torch.Generator().manual_seed(seed)
    if draw == 'uniform':
        order = torch.cat(
            [
                torch.randperm(len(samples), generator=generator)
                for _ in range(-(-count // len(samples)))
            ]
        )[:count]
    elif draw in ('balanced', 'cf-comp'):
        ids = [_foreground_ids(s['mask']) for s in samples]
        frequency = Counter(i for sample_ids in ids for i in set(sample_ids))
        weights = torch.tensor([max(1.0 / frequency[i] for i in sample_ids) for sample_ids in ids])
        order = torch.multinomial(weights, count, replacement=True, generator=generator)
    else:
        raise ValueError(f"draw must be 'uniform', 'balanced' or 'cf-comp', got {draw!r}")
    keys = ('image', 'mask', 'prompt', 'categories', 'source')
    chosen = [{k: samples[int(i)][k] for k in keys} for i in order]
    if draw != 'cf-comp':
        return chosen
    from torchgeo_earthsynth.transforms import CounterfactualComposition

    compose = CounterfactualComposition(real_share=0.0, tile_prob=0.0, seed=seed)
    batch = compose(default_collate(chosen))
    return [{k: batch[k][i] for k in keys} for i in range(count)]


def class_counts(masks: Sequence[Tensor] | Tensor) -> dict[str, int]:
    """How many masks contain each vocabulary class (background left out), rarest first.

    Args:
        masks: int [H, W] masks of vocabulary ids.

    Returns:
        ``{class name: number of masks holding it}``.

    .. versionadded:: 0.2
    """
    counts = Counter(i for mask in masks for i in present_ids(mask) if i != BACKGROUND)
    return {VOCABULARY[i]: n for i, n in sorted(counts.items(), key=lambda kv: (kv[1], kv[0]))}


__all__ = ('LayoutDraw', 'class_counts', 'draw_layouts')
