# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""A regression super-resolution baseline: ESPCN on any band count, residual over bicubic."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import Tensor, nn

__all__ = ('ESPCN', 'fit_sr_baseline')


class ESPCN(ModelMixin, ConfigMixin):  # type: ignore[misc]  # diffusers is untyped
    """ESPCN (Shi et al., CVPR 2016) from a low-res stack to high-res RGB, plus bicubic.

    Three convolutions on the low-res grid (5x5, 3x3, 3x3; tanh) and a sub-pixel
    convolution (``PixelShuffle``) to ``scale`` times the size; the network predicts the
    residual over the bicubic upsampling of the stack's RGB bands (a global residual, as
    VDSR), so an untrained ESPCN is close to bicubic and training improves on it. Inputs and
    outputs are 0..255. Saved and loaded with diffusers' ``save_pretrained`` and
    ``from_pretrained`` (safetensors).

    Args:
        in_channels: bands of the low-res stack (3 for RGB, 10 for Sentinel-2's).
        scale: upscaling factor.
        features: channels of the two hidden convolutions (ESPCN: 64, 32).
        rgb_bands: the stack's red, green and blue channels (the bicubic residual base).

    .. versionadded:: 0.3
    """

    @register_to_config  # type: ignore[untyped-decorator]
    def __init__(
        self,
        in_channels: int = 3,
        scale: int = 2,
        features: Sequence[int] = (64, 32),
        rgb_bands: Sequence[int] = (0, 1, 2),
    ) -> None:
        super().__init__()
        if scale < 1 or len(features) != 2 or len(rgb_bands) != 3:
            raise ValueError(
                f'ESPCN: scale >= 1, two feature sizes and three rgb_bands, got scale={scale}, '
                f'features={list(features)}, rgb_bands={list(rgb_bands)}'
            )
        first, second = features
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, first, 5, padding=2),
            nn.Tanh(),
            nn.Conv2d(first, second, 3, padding=1),
            nn.Tanh(),
            nn.Conv2d(second, 3 * scale**2, 3, padding=1),
            nn.PixelShuffle(scale),
        )

    def forward(self, low_res: Tensor) -> Tensor:
        """Super-resolve [B, in_channels, h, w] (0..255) to RGB [B, 3, h * scale, w * scale].

        Raises:
            ValueError: if the band count is not ``in_channels``.
        """
        channels = self.config.in_channels
        if low_res.ndim != 4 or low_res.shape[1] != channels:
            raise ValueError(
                f'ESPCN: expected low_res [B, {channels}, h, w], got {list(low_res.shape)}'
            )
        scale = self.config.scale
        rgb = low_res[:, list(self.config.rgb_bands)]
        size = (low_res.shape[-2] * scale, low_res.shape[-1] * scale)
        base = F.interpolate(rgb, size=size, mode='bicubic', align_corners=False)
        residual: Tensor = self.body(low_res / 127.5 - 1) * 127.5
        return base + residual


def fit_sr_baseline(
    model: ESPCN,
    batches: Iterable[dict[str, Any]],
    steps: int,
    lr: float = 1e-3,
) -> list[float]:
    """Fit the baseline on (``low_res``, ``image``) pairs with an L1 loss (AdamW).

    Args:
        model: the network (trained in place).
        batches: batches with ``low_res`` [B, C, h, w] and ``image`` [B, 3, H, W], 0..255;
            cycled until ``steps``.
        steps: optimizer steps.
        lr: learning rate.

    Returns:
        The loss of every step.

    Raises:
        ValueError: if ``batches`` is empty.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)

    def l1(batch: dict[str, Any]) -> Tensor:
        prediction = model(batch['low_res'].to(model.device))
        return F.l1_loss(prediction, batch['image'].to(model.device)) / 255

    return fit_pairs(model, batches, steps, optimizer, l1, 'fit_sr_baseline')


def fit_pairs(
    model: nn.Module,
    batches: Iterable[dict[str, Any]],
    steps: int,
    optimizer: torch.optim.Optimizer,
    loss_of: Callable[[dict[str, Any]], Tensor],
    name: str,
) -> list[float]:
    """The training loop of the SR networks: ``batches`` cycled for ``steps`` optimizer steps.

    Args:
        model: the network (trained in place, left in eval mode).
        batches: the training batches; cycled until ``steps``.
        steps: optimizer steps.
        optimizer: the optimizer of the trained parameters.
        loss_of: a batch's loss.
        name: the caller, for the error.

    Returns:
        The loss of every step.

    Raises:
        ValueError: if ``batches`` is empty.
    """
    model.train()
    losses: list[float] = []
    while len(losses) < steps:
        seen = False
        for batch in batches:
            seen = True
            loss = loss_of(batch)
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            losses.append(float(loss.detach()))
            if len(losses) == steps:
                break
        if not seen:
            raise ValueError(f'{name}: no batches to train on')
    model.eval()
    return losses
