# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Does a generator follow held-out masks? Its mask fidelity beside real images and controls."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from torchgeo_earthsynth.metrics.mask_fidelity import MaskFidelityResult, mask_fidelity
from torchgeo_earthsynth.metrics.pixel_classifier import PixelClassifier

#: Name of the real images' row (the ceiling) in :attr:`GeneratorFidelity.scores`.
REAL_ROW = 'real held-out images (reference)'


class MaskGenerator(Protocol):
    """Anything with ``Synthesizer.generate``'s mask form."""

    def generate(self, masks: Tensor, prompts: Sequence[str], seeds: Sequence[int]) -> Tensor:
        """[B, 3, H, W] images in 0..255 for masks, prompts and per-sample seeds."""
        ...


def generate_images(
    generator: MaskGenerator,
    samples: Sequence[Mapping[str, Any]],
    batch_size: int = 16,
    desc: str | None = None,
) -> Tensor:
    """Images for the ``mask`` and ``prompt`` of each sample, sample ``i`` with seed ``i``.

    Args:
        generator: e.g. a :class:`~torchgeo_earthsynth.synthesis.Synthesizer`.
        samples: sample dicts with ``mask`` and ``prompt``.
        batch_size: samples per call.
        desc: progress bar label (None: no bar).

    Returns:
        float32 [N, 3, H, W] in 0..255, on the CPU.
    """
    chunks = []
    starts = range(0, len(samples), batch_size)
    for i in tqdm(starts, desc=desc, leave=False, disable=desc is None):
        part = samples[i : i + batch_size]
        masks = torch.stack([s['mask'] for s in part])
        seeds = list(range(i, i + len(part)))
        chunks.append(generator.generate(masks, [s['prompt'] for s in part], seeds).cpu())
    return torch.cat(chunks)


@dataclass
class GeneratorFidelity:
    """Mask fidelity of generated images for held-out masks (see :func:`generator_fidelity`).

    Attributes:
        scores: row name -> fidelity: :data:`REAL_ROW`, each generator, and
            ``'<name> given shuffled masks'`` for the shuffled-mask control.
        images: each generator's images (and the shuffled control's), [N, 3, H, W].
        segmenter: the pixel classifier fitted on real training images.

    .. versionadded:: 0.2
    """

    scores: dict[str, MaskFidelityResult]
    images: dict[str, Tensor]
    segmenter: PixelClassifier

    def rows(self) -> list[dict[str, Any]]:
        """One table row per entry: images, mIoU, pixel accuracy."""
        return [
            {'images': name, 'mIoU': r.miou, 'pixel accuracy': r.pixel_accuracy}
            for name, r in self.scores.items()
        ]


def generator_fidelity(
    generators: Mapping[str, MaskGenerator],
    train: Sequence[Mapping[str, Any]],
    held_out: Sequence[Mapping[str, Any]],
    shuffled_control: str | None = None,
    seed: int = 0,
    progress: bool = False,
) -> GeneratorFidelity:
    """Score generators by how well a pixel classifier finds their condition masks.

    A :class:`PixelClassifier` is fitted on real training images; each generator renders
    the held-out masks (sample ``i`` with seed ``i``), and the classifier's mIoU against the
    condition masks is its fidelity. Real held-out images give the ceiling; the control
    ``shuffled_control`` renders each scene's prompt with another scene's mask, what
    prompts and class priors alone earn.

    Args:
        generators: name -> generator, e.g. ``{'untrained': ..., 'trained': ...}``.
        train: real training samples (``image``, ``mask``) the classifier is fitted on.
        held_out: held-out samples (``image``, ``mask``, ``prompt``) to render.
        shuffled_control: name of the generator that also renders shuffled masks.
        seed: seed of the classifier's fit and of the shuffle.
        progress: show progress bars.

    Returns:
        The scores, images and classifier.

    .. versionadded:: 0.2
    """
    segmenter = PixelClassifier().fit(
        torch.stack([s['image'] for s in train]), torch.stack([s['mask'] for s in train]), seed=seed
    )
    segmenter.eval()
    masks = torch.stack([s['mask'] for s in held_out])
    real = torch.stack([s['image'] for s in held_out])
    images = {
        name: generate_images(g, held_out, desc=f'    {name}' if progress else None)
        for name, g in generators.items()
    }
    if shuffled_control is not None:
        order = torch.randperm(len(held_out), generator=torch.Generator().manual_seed(seed + 1))
        shuffled = [{**s, 'mask': held_out[int(j)]['mask']} for s, j in zip(held_out, order)]
        images[f'{shuffled_control} given shuffled masks'] = generate_images(
            generators[shuffled_control], shuffled, desc='    shuffled' if progress else None
        )
    scores = {REAL_ROW: mask_fidelity(segmenter, real, masks)}
    scores |= {
        name: mask_fidelity(segmenter, generated, masks) for name, generated in images.items()
    }
    return GeneratorFidelity(scores, images, segmenter)


__all__ = (
    'REAL_ROW',
    'GeneratorFidelity',
    'MaskGenerator',
    'generate_images',
    'generator_fidelity',
)
