# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Stable Diffusion parts: their container, SD's noise schedule, loading a base."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from torch import nn
from transformers import CLIPTextModel, CLIPTokenizer

from torchgeo_earthsynth.models.multispectral import load_vae

#: Base model of the paper (DESIGN.md).
SD15_ID: Final = 'stable-diffusion-v1-5/stable-diffusion-v1-5'

__all__ = ('SD15_ID', 'DiffusionParts', 'forward_kwargs', 'pretrained_parts', 'sd_scheduler')


@dataclass
class DiffusionParts:
    """The Stable Diffusion parts a ControlNet pipeline needs."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: DDPMScheduler


def sd_scheduler(prediction_type: str = 'epsilon') -> DDPMScheduler:
    """SD 1.5's training noise schedule."""
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule='scaled_linear',
        prediction_type=prediction_type,
        clip_sample=False,
        # explicit: a sampler made ``from_config`` takes its own default for a key left
        # unset in memory but the saved value after a reload, so an export would sample
        # other timesteps than the module that wrote it
        timestep_spacing='linspace',
    )


def pretrained_parts(
    base: str | Path = SD15_ID,
    prediction_type: str | None = None,
    revision: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> DiffusionParts:
    """Stable Diffusion parts from a hub id or a local diffusers folder.

    Every part is loaded in ``dtype`` whatever the folder stores: transformers 5 keeps a
    float16 folder's text encoder in float16 while diffusers upcasts the UNet and VAE, and
    mixed parts fail under autocast (CPU ``bf16-mixed``: "mixed dtype (CPU)").

    Args:
        base: hub id (e.g. SD 1.5) or local folder in diffusers layout.
        prediction_type: override the scheduler's prediction type.
        revision: hub revision.
        dtype: the parts' dtype (float32: Lightning's precision plugins cast from there).

    Returns:
        The pretrained parts.
    """
    base = str(base)
    kwargs: dict[str, Any] = {'revision': revision} if revision else {}
    scheduler = DDPMScheduler.from_pretrained(base, subfolder='scheduler', **kwargs)
    kwargs['torch_dtype'] = dtype
    if prediction_type is not None:
        scheduler = DDPMScheduler.from_config(scheduler.config, prediction_type=prediction_type)
    return DiffusionParts(
        unet=UNet2DConditionModel.from_pretrained(base, subfolder='unet', **kwargs),
        vae=load_vae(base, 'vae', **kwargs),  # a multispectral VAE keeps its class
        text_encoder=CLIPTextModel.from_pretrained(base, subfolder='text_encoder', **kwargs),
        tokenizer=CLIPTokenizer.from_pretrained(base, subfolder='tokenizer', revision=revision),
        scheduler=scheduler,
    )


@contextmanager
def forward_kwargs(module: nn.Module, **kwargs: Any) -> Iterator[None]:
    """Hand ``kwargs`` to every call of ``module`` in this block (a forward pre-hook).

    diffusers' pipelines call their UNet and ControlNet without some inputs a family needs
    (Text2Earth's ``class_labels``, DiffusionSat's ControlNet metadata); they are added here,
    already stacked as the pipeline's batch (e.g. [unconditional, conditional]).
    """

    def add(_: nn.Module, args: Any, given: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return args, {**given, **kwargs}

    handle = module.register_forward_pre_hook(add, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
