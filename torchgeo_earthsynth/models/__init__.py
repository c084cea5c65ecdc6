# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Diffusers components: one module per generator family, SD parts, tiny configs, tokenizer."""

from .diffusionsat import (
    DIFFUSIONSAT_CHECKPOINTS,
    SD21_ID,
    DiffusionSatUNet,
    diffusionsat_parts,
    find_diffusionsat_unet,
    is_diffusionsat_unet,
    load_diffusionsat_unet,
    normalize_metadata,
    unconditional_metadata,
)
from .earthsynth import EARTHSYNTH_ID, EARTHSYNTH_SUBFOLDER, load_controlnet
from .prompts import PromptEncoder
from .stable_diffusion import SD15_ID, DiffusionParts, pretrained_parts, sd_scheduler
from .tiny import (
    TINY_TEXT_DIM,
    tiny_controlnet,
    tiny_diffusionsat_parts,
    tiny_diffusionsat_unet,
    tiny_parts,
    tiny_text_encoder,
    tiny_unet,
    tiny_vae,
)
from .tokenizer import clip_tokenizer

__all__ = (
    'DIFFUSIONSAT_CHECKPOINTS',
    'EARTHSYNTH_ID',
    'EARTHSYNTH_SUBFOLDER',
    'SD15_ID',
    'SD21_ID',
    'TINY_TEXT_DIM',
    'DiffusionParts',
    'DiffusionSatUNet',
    'PromptEncoder',
    'clip_tokenizer',
    'diffusionsat_parts',
    'find_diffusionsat_unet',
    'is_diffusionsat_unet',
    'load_controlnet',
    'load_diffusionsat_unet',
    'normalize_metadata',
    'pretrained_parts',
    'sd_scheduler',
    'tiny_controlnet',
    'tiny_diffusionsat_parts',
    'tiny_diffusionsat_unet',
    'tiny_parts',
    'tiny_text_encoder',
    'tiny_unet',
    'tiny_vae',
    'unconditional_metadata',
)
