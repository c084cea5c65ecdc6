# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Super-resolution with a synthesizer: a low-res stack resized to its condition, generated."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import Tensor

from torchgeo_earthsynth.degradation import upsample
from torchgeo_earthsynth.families.superres import condition_size

if TYPE_CHECKING:
    from torchgeo_earthsynth.synthesis.synthesizer import Synthesizer


def super_resolve(
    synthesizer: Synthesizer,
    low_res: Tensor,
    prompts: Sequence[str],
    scale: int,
    seeds: Sequence[int] | Tensor | None = None,
    metadata: Tensor | None = None,
) -> Tensor:
    """Super-resolve a low-res stack with a super-resolution ControlNet synthesizer.

    The stack (0..255, any band count the ControlNet takes) is scaled to [0, 1] and resized
    bicubically to the size the ControlNet takes it at (:func:`condition_size`).

    Args:
        synthesizer: a :class:`~torchgeo_earthsynth.synthesis.Synthesizer` that
            takes ``low_res``.
        low_res: float [B, C, h, w] in 0..255.
        prompts: B prompts.
        scale: output size / ``low_res`` size.
        seeds: B seeds (default ``0..B-1``).
        metadata: [B, 7] for a ControlNet or UNet with metadata.

    Returns:
        float32 [B, 3, h * scale, w * scale] in 0..255.

    Raises:
        ValueError: if the synthesizer is not a super-resolution one.
    """
    if not synthesizer.takes('low_res'):
        raise ValueError("super_resolve needs a super-resolution synthesizer (takes 'low_res')")
    height, width = low_res.shape[-2] * scale, low_res.shape[-1] * scale
    pipeline = synthesizer.pipeline
    size = condition_size(pipeline.controlnet, pipeline.vae_scale_factor, height, width)
    condition = upsample(low_res, size) / 255
    return synthesizer.generate(
        None, prompts, seeds, (height, width), metadata=metadata, low_res=condition
    )


__all__ = ('super_resolve',)
