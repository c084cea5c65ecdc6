# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Image quality against a reference: PSNR and SSIM (optionally on BT.601 luma)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal

import torch
from torch import Tensor
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

if TYPE_CHECKING:  # open_clip and torch-fidelity are slow to import: loaded when used
    pass


#: BT.601 luma weights for [0, 1] RGB giving Y in [16, 235] on the 0..255 scale (as MATLAB's
#: ``rgb2ycbcr`` and the super-resolution literature, e.g. BasicSR ``test_y_channel``).
_BT601_Y: Final = (65.481, 128.553, 24.966)


def rgb_to_y(images: Tensor, data_range: float = 255.0) -> Tensor:
    """BT.601 luma ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` (R, G, B in 0..255).

    Inputs in ``[0, data_range]`` are scaled to 0..255, converted, and scaled back, so the
    output is in the input's range (``[16, 235] * data_range / 255``).

    Args:
        images: ``[B, 3, H, W]`` RGB.
        data_range: the images' maximum value (255 or 1).

    Returns:
        ``[B, 1, H, W]`` luma.

    Raises:
        ValueError: if ``images`` is not ``[B, 3, H, W]``.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f'y_channel needs RGB [B, 3, H, W], got shape {tuple(images.shape)}')
    weights = torch.tensor(_BT601_Y, dtype=torch.float64, device=images.device).view(1, 3, 1, 1)
    rgb = images.double() * (255.0 / data_range)
    y = 16.0 + (rgb * weights).sum(1, keepdim=True) / 255.0
    return (y * (data_range / 255.0)).to(
        images.dtype if images.is_floating_point() else torch.float32
    )


def _prepare(
    preds: Tensor, target: Tensor, data_range: float, y_channel: bool, crop_border: int
) -> tuple[Tensor, Tensor]:
    if preds.shape != target.shape or preds.ndim != 4:
        raise ValueError(
            f'preds and target must both be [B, C, H, W], got {tuple(preds.shape)} and '
            f'{tuple(target.shape)}'
        )
    h, w = preds.shape[-2:]
    if not 0 <= 2 * crop_border < min(h, w):
        raise ValueError(f'crop_border={crop_border} leaves nothing of a {h}x{w} image')
    preds, target = preds.double(), target.double()
    if y_channel:
        preds, target = rgb_to_y(preds, data_range), rgb_to_y(target, data_range)
    if crop_border:
        c = crop_border
        preds, target = preds[..., c:-c, c:-c], target[..., c:-c, c:-c]
    return preds, target


def psnr(
    preds: Tensor,
    target: Tensor,
    data_range: float = 255.0,
    y_channel: bool = False,
    crop_border: int = 0,
    reduction: Literal['mean', 'none'] = 'mean',
) -> Tensor:
    """PSNR per image (averaged over the batch), as super-resolution papers report it.

    Computed with torchmetrics' functional ``peak_signal_noise_ratio`` over each image in
    float64; identical images give ``inf``.

    Args:
        preds: ``[B, C, H, W]`` in ``[0, data_range]``.
        target: same shape.
        data_range: maximum value (255 for 0..255 images).
        y_channel: compare BT.601 luma only (:func:`rgb_to_y`).
        crop_border: pixels removed from each side before comparing.
        reduction: ``mean`` over images or ``none`` for ``[B]``.

    Returns:
        PSNR in dB (float64).

    Raises:
        ValueError: on mismatched shapes or a too large ``crop_border``.
    """
    preds, target = _prepare(preds, target, data_range, y_channel, crop_border)
    values = peak_signal_noise_ratio(
        preds, target, data_range=data_range, reduction='none', dim=(1, 2, 3)
    )
    return values.mean() if reduction == 'mean' else values


def ssim(
    preds: Tensor,
    target: Tensor,
    data_range: float = 255.0,
    y_channel: bool = False,
    crop_border: int = 0,
    reduction: Literal['mean', 'none'] = 'mean',
) -> Tensor:
    """SSIM per image (Gaussian 11x11 window, sigma 1.5, torchmetrics' functional SSIM).

    Args:
        preds: ``[B, C, H, W]`` in ``[0, data_range]``; at least 11 px after cropping.
        target: same shape.
        data_range: maximum value (255 for 0..255 images).
        y_channel: compare BT.601 luma only (:func:`rgb_to_y`).
        crop_border: pixels removed from each side before comparing.
        reduction: ``mean`` over images or ``none`` for ``[B]``.

    Returns:
        SSIM in [-1, 1] (float64); 1 for identical images.

    Raises:
        ValueError: on mismatched shapes, a too large ``crop_border`` or images under 11 px.
    """
    preds, target = _prepare(preds, target, data_range, y_channel, crop_border)
    if min(preds.shape[-2:]) < 11:
        raise ValueError(f'SSIM needs images of at least 11x11 px, got {tuple(preds.shape[-2:])}')
    values = structural_similarity_index_measure(
        preds, target, data_range=data_range, reduction='none'
    )
    assert isinstance(values, Tensor)
    return values.mean() if reduction == 'mean' else values


__all__ = (
    'psnr',
    'rgb_to_y',
    'ssim',
)
