# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Super-resolution as a task: the degradation model, condition resizing, diffusion SR calls."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d
from torch import Tensor

if TYPE_CHECKING:  # synthesis imports this module to load our SR exports
    from .models import DiffusionSatControlNet, LowResControlNetPipeline
    from .synthesis import Synthesizer

__all__ = (
    'RGB_BANDS',
    'condition_size',
    'degrade',
    'is_super_resolution_export',
    'low_res_pipeline',
    'super_resolve',
    'upsample',
)

#: Channels of a low-res stack that hold red, green, blue (the Sentinel-2 order of
#: :data:`~torchgeo_earthsynth.models.SENTINEL2_LOW_RES_BANDS` starts B4, B3, B2).
RGB_BANDS = (0, 1, 2)


def degrade(
    images: Tensor,
    scale: int,
    blur_sigma: float | None = None,
    noise_std: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The low-res view of an image: Gaussian blur, decimation by ``scale``, Gaussian noise.

    The "BD" degradation of the super-resolution literature: a Gaussian blur (sigma
    ``scale / 2`` by default, wide enough to remove what decimation would alias), keeping
    every ``scale``-th pixel (the centre one of each ``scale`` x ``scale`` cell), then
    additive white Gaussian noise, clipped to 0..255.

    Args:
        images: float [B, C, H, W] in 0..255, any band count; H and W multiples of ``scale``.
        scale: downsampling factor (e.g. 2 or 4).
        blur_sigma: Gaussian blur sigma in high-res pixels (None: ``scale / 2``; 0: none).
        noise_std: standard deviation of the added noise (0..255 scale).
        generator: CPU generator of the noise (reproducible per sample).

    Returns:
        float32 [B, C, H / scale, W / scale] in 0..255.

    Raises:
        ValueError: if ``images`` is not [B, C, H, W] or its size is not a multiple of ``scale``.
    """
    if images.ndim != 4:
        raise ValueError(f'degrade: expected [B, C, H, W], got {list(images.shape)}')
    if scale < 1 or images.shape[-2] % scale or images.shape[-1] % scale:
        raise ValueError(
            f'degrade: scale {scale} must be >= 1 and divide the image size '
            f'{list(images.shape[-2:])}'
        )
    out = images.float()
    sigma = scale / 2 if blur_sigma is None else blur_sigma
    if sigma > 0:
        radius = math.ceil(3 * sigma)
        out = gaussian_blur2d(
            out, (2 * radius + 1, 2 * radius + 1), (sigma, sigma), border_type='reflect'
        )
    offset = scale // 2
    out = out[..., offset::scale, offset::scale]
    if noise_std > 0:
        noise = torch.randn(out.shape, generator=generator).to(out)
        out = out + noise_std * noise
    return out.clamp(0, 255)


def upsample(
    low_res: Tensor,
    size: tuple[int, int],
    mode: Literal['bicubic', 'bilinear', 'nearest'] = 'bicubic',
) -> Tensor:
    """Resize a low-res stack to ``size``, clipped to its 0..255 range (bicubic: the SR floor).

    Args:
        low_res: float [B, C, h, w] in 0..255.
        size: output (height, width).
        mode: interpolation.

    Returns:
        float32 ``[B, C, *size]`` in 0..255.
    """
    align = None if mode == 'nearest' else False
    out = F.interpolate(low_res.float(), size=size, mode=mode, align_corners=align)
    return out.clamp(0, 255)


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
    from .models import LowResControlNetPipeline, load_diffusionsat_controlnet, pretrained_parts
    from .synthesis_parts import build_pipeline

    parts = pretrained_parts(folder)
    controlnet = load_diffusionsat_controlnet(folder, 'controlnet')
    pipeline: LowResControlNetPipeline = build_pipeline(parts, controlnet, LowResControlNetPipeline)
    return pipeline
