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
from .diffusionsat_controlnet import (
    SENTINEL2_LOW_RES_BANDS,
    DiffusionSatControlNet,
    LowResControlNetPipeline,
    controlnet_metadata,
    find_diffusionsat_controlnet,
    is_diffusionsat_controlnet,
    load_diffusionsat_controlnet,
    sentinel2_low_res,
)
from .earthsynth import EARTHSYNTH_ID, EARTHSYNTH_SUBFOLDER, load_controlnet
from .multicontrol import MULTICONTROL_CONFIG, NamedMultiControlNet, is_multicontrol
from .prompts import PromptEncoder
from .stable_diffusion import SD15_ID, DiffusionParts, pretrained_parts, sd_scheduler
from .tiny import (
    TINY_TEXT_DIM,
    tiny_controlnet,
    tiny_diffusionsat_controlnet,
    tiny_diffusionsat_parts,
    tiny_diffusionsat_unet,
    tiny_multicontrol,
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
    'MULTICONTROL_CONFIG',
    'SD15_ID',
    'SD21_ID',
    'SENTINEL2_LOW_RES_BANDS',
    'TINY_TEXT_DIM',
    'DiffusionParts',
    'DiffusionSatControlNet',
    'DiffusionSatUNet',
    'LowResControlNetPipeline',
    'NamedMultiControlNet',
    'PromptEncoder',
    'clip_tokenizer',
    'controlnet_metadata',
    'diffusionsat_parts',
    'find_diffusionsat_controlnet',
    'find_diffusionsat_unet',
    'is_diffusionsat_controlnet',
    'is_diffusionsat_unet',
    'is_multicontrol',
    'load_controlnet',
    'load_diffusionsat_controlnet',
    'load_diffusionsat_unet',
    'normalize_metadata',
    'pretrained_parts',
    'sd_scheduler',
    'sentinel2_low_res',
    'tiny_controlnet',
    'tiny_diffusionsat_controlnet',
    'tiny_diffusionsat_parts',
    'tiny_diffusionsat_unet',
    'tiny_multicontrol',
    'tiny_parts',
    'tiny_text_encoder',
    'tiny_unet',
    'tiny_vae',
    'unconditional_metadata',
)
