# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The super-resolution degradation model: blur and downsample, and resizing back up."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d
from torch import Tensor

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


__all__ = ('RGB_BANDS', 'degrade', 'upsample')
