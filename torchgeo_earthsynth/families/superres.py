# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Super-resolution as a task: the degradation model, condition resizing, diffusion SR calls."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor

from torchgeo_earthsynth.degradation import upsample

if TYPE_CHECKING:  # synthesis imports this module to load our SR exports
    from torchgeo_earthsynth.models import DiffusionSatControlNet, LowResControlNetPipeline
    from torchgeo_earthsynth.synthesis.synthesizer import Synthesizer

__all__ = (
    'condition_size',
    'is_super_resolution_export',
    'low_res_pipeline',
    'super_resolve',
)


def condition_size(
    controlnet: DiffusionSatControlNet, vae_scale_factor: int, height: int, width: int
) -> tuple[int, int]:
    """The size a super-resolution ControlNet takes its low-res condition at, for an output size.

    Our super-resolution ControlNets take it at the output size; DiffusionSat's released one
    at half of it (``conditioning_scale`` 2): latent size times the condition embedding's
    downsampling.

    Args:
        controlnet: the ControlNet.
        vae_scale_factor: the VAE's downscale factor (8 for SD, 2 for the tiny preset).
        height: output height.
        width: output width.

    Returns:
        The condition's (height, width).
    """
    downsample = controlnet.condition_downsample
    return height // vae_scale_factor * downsample, width // vae_scale_factor * downsample


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
        synthesizer: a :class:`~torchgeo_earthsynth.synthesis.Synthesizer` whose
            ``takes_low_res``.
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
    if not synthesizer.takes_low_res:
        raise ValueError('super_resolve needs a super-resolution synthesizer (takes_low_res)')
    height, width = low_res.shape[-2] * scale, low_res.shape[-1] * scale
    pipeline = synthesizer.pipeline
    size = condition_size(pipeline.controlnet, pipeline.vae_scale_factor, height, width)
    condition = upsample(low_res, size) / 255
    return synthesizer.generate(
        None, prompts, seeds, (height, width), metadata=metadata, low_res=condition
    )


def is_super_resolution_export(folder: str | Path) -> bool:
    """Whether ``folder`` is a full pipeline export of ``SuperResolutionTask``."""
    path = Path(folder)
    index = path / 'model_index.json'
    return index.is_file() and 'LowResControlNetPipeline' in index.read_text()


def low_res_pipeline(folder: str | Path) -> LowResControlNetPipeline:
    """Load a ``SuperResolutionTask`` full export as a ``LowResControlNetPipeline``.

    Args:
        folder: the export (``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``,
            ``tokenizer/``, ``scheduler/``, ``controlnet/`` with DiffusionSat's config fields).

    Returns:
        The pipeline, its ControlNet loaded key for key.
    """
    from torchgeo_earthsynth.models import (
        LowResControlNetPipeline,
        load_diffusionsat_controlnet,
        pretrained_parts,
    )
    from torchgeo_earthsynth.synthesis.parts import build_pipeline

    parts = pretrained_parts(folder)
    controlnet = load_diffusionsat_controlnet(folder, 'controlnet')
    pipeline: LowResControlNetPipeline = build_pipeline(parts, controlnet, LowResControlNetPipeline)
    return pipeline
