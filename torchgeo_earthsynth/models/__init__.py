# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Diffusers components: one module per generator family, SD parts, tiny configs, tokenizer."""

from .earthsynth import EARTHSYNTH_ID, EARTHSYNTH_SUBFOLDER, load_controlnet
from .prompts import PromptEncoder
from .stable_diffusion import SD15_ID, DiffusionParts, pretrained_parts, sd_scheduler
from .tiny import (
    TINY_TEXT_DIM,
    tiny_controlnet,
    tiny_parts,
    tiny_text_encoder,
    tiny_unet,
    tiny_vae,
)
from .tokenizer import clip_tokenizer

__all__ = (
    'EARTHSYNTH_ID',
    'EARTHSYNTH_SUBFOLDER',
    'SD15_ID',
    'TINY_TEXT_DIM',
    'DiffusionParts',
    'PromptEncoder',
    'clip_tokenizer',
    'load_controlnet',
    'pretrained_parts',
    'sd_scheduler',
    'tiny_controlnet',
    'tiny_parts',
    'tiny_text_encoder',
    'tiny_unet',
    'tiny_vae',
)
