# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The denoising loss of the diffusion tasks: targets, min-SNR weights, local term, dropout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.training_utils import compute_snr
from torch import Tensor

__all__ = ('denoising_loss', 'drop_prompts', 'min_snr_weight', 'prediction_target')


def drop_prompts(
    prompts: Sequence[str], probability: float, generator: torch.Generator | None = None
) -> list[str]:
    """Replace each prompt by ``''`` with the given probability (classifier-free guidance).

    Args:
        prompts: the batch's prompts.
        probability: chance of an empty prompt, drawn independently per prompt.
        generator: CPU generator for reproducible draws.

    Returns:
        The prompts, some emptied.
    """
    if probability <= 0:
        return list(prompts)
    drop = torch.rand(len(prompts), generator=generator) < probability
    return ['' if d else prompt for prompt, d in zip(prompts, drop.tolist())]


def prediction_target(scheduler: Any, latents: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
    """What the network predicts: the noise, or v = sqrt(a) noise - sqrt(1 - a) latents.

    Args:
        scheduler: the training noise scheduler (its ``prediction_type`` decides).
        latents: clean latents.
        noise: the noise added to them.
        timesteps: their timesteps.

    Returns:
        The target, shaped as the latents.
    """
    if scheduler.config.prediction_type == 'v_prediction':
        velocity: Tensor = scheduler.get_velocity(latents, noise, timesteps)
        return velocity
    return noise


def min_snr_weight(scheduler: Any, timesteps: Tensor, gamma: float) -> Tensor:
    """Min-SNR weights (Hang et al. 2023): min(snr, gamma) / snr, or / (snr + 1) for v.

    Args:
        scheduler: the training noise scheduler.
        timesteps: [B] timesteps.
        gamma: the SNR cap.

    Returns:
        [B] per-sample loss weights.
    """
    snr: Tensor = compute_snr(scheduler, timesteps)
    if scheduler.config.prediction_type == 'v_prediction':
        return snr.clamp(max=gamma) / (snr + 1)
    return snr.clamp(max=gamma) / snr


def denoising_loss(
    pred: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    foreground: Tensor | None = None,
    local_weight: float = 0.0,
) -> Tensor:
    """Per-sample MSE plus a local MSE over foreground pixels, both weighted, averaged.

    Args:
        pred: [B, C, h, w] network output.
        target: [B, C, h, w] its target.
        weight: [B] per-sample weights (min-SNR) for both terms, or None.
        foreground: [B, 1, H, W] foreground weights at any resolution (resized nearest),
            or None for no local term; a sample without foreground adds nothing.
        local_weight: weight of the local term.

    Returns:
        The scalar loss.
    """
    error = (pred.float() - target.float()) ** 2
    per_sample = error.mean(dim=(1, 2, 3))
    if foreground is not None and local_weight > 0:
        fg = F.interpolate(foreground.to(error), size=error.shape[-2:], mode='nearest')
        local = (error * fg).sum(dim=(1, 2, 3)) / (fg.sum(dim=(1, 2, 3)) * error.shape[1])
        per_sample = per_sample + local_weight * local.nan_to_num(0.0)
    if weight is not None:  # one weight for the global and the local term
        per_sample = per_sample * weight
    loss: Tensor = per_sample.mean()
    return loss
