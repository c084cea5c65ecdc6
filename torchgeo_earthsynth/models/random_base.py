# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Random-weight Stable Diffusion bases of the real architectures, written as diffusers folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final, Literal

import diffusers
import torch
from diffusers import AutoencoderKL, DDIMScheduler, PNDMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from torchgeo_earthsynth.atomic import atomic_directory
from torchgeo_earthsynth.models.tokenizer import clip_tokenizer

__all__ = ('BASE_CONFIGS', 'Architecture', 'random_base')

#: The published architectures a random base can take.
Architecture = Literal['sd15', 'sd21']

_DOWN: Final = ('CrossAttnDownBlock2D',) * 3 + ('DownBlock2D',)
_UP: Final = ('UpBlock2D',) + ('CrossAttnUpBlock2D',) * 3
_SCHEDULE: Final[dict[str, Any]] = {
    'num_train_timesteps': 1000,
    'beta_start': 0.00085,
    'beta_end': 0.012,
    'beta_schedule': 'scaled_linear',
    'clip_sample': False,
    'set_alpha_to_one': False,
    'steps_offset': 1,
}
# Fields both hub UNets share (runwayml/stable-diffusion-v1-5, stabilityai/stable-diffusion-2-1).
_UNET: Final[dict[str, Any]] = {
    'act_fn': 'silu',
    'block_out_channels': (320, 640, 1280, 1280),
    'center_input_sample': False,
    'down_block_types': _DOWN,
    'downsample_padding': 1,
    'flip_sin_to_cos': True,
    'freq_shift': 0,
    'in_channels': 4,
    'layers_per_block': 2,
    'mid_block_scale_factor': 1,
    'norm_eps': 1e-05,
    'norm_num_groups': 32,
    'out_channels': 4,
    'up_block_types': _UP,
}
_VAE: Final[dict[str, Any]] = {
    'act_fn': 'silu',
    'block_out_channels': (128, 256, 512, 512),
    'down_block_types': ('DownEncoderBlock2D',) * 4,
    'up_block_types': ('UpDecoderBlock2D',) * 4,
    'in_channels': 3,
    'out_channels': 3,
    'latent_channels': 4,
    'layers_per_block': 2,
    'norm_num_groups': 32,
}
# CLIP text fields both share (their text_encoder/config.json keep CLIP's legacy token ids).
_TEXT: Final[dict[str, Any]] = {
    'vocab_size': 49408,
    'max_position_embeddings': 77,
    'layer_norm_eps': 1e-05,
    'bos_token_id': 0,
    'eos_token_id': 2,
    'pad_token_id': 1,
}

#: The published configs of each part, as the hub folders' config.json files give them.
BASE_CONFIGS: Final[dict[str, dict[str, dict[str, Any]]]] = {
    'sd15': {  # runwayml/stable-diffusion-v1-5: CLIP ViT-L/14 text encoder, epsilon, PNDM
        'unet': {**_UNET, 'attention_head_dim': 8, 'cross_attention_dim': 768, 'sample_size': 64},
        'vae': {**_VAE, 'sample_size': 512},
        'text_encoder': {
            **_TEXT,
            'hidden_act': 'quick_gelu',
            'hidden_size': 768,
            'intermediate_size': 3072,
            'num_attention_heads': 12,
            'num_hidden_layers': 12,
            'projection_dim': 768,
        },
        'scheduler': {**_SCHEDULE, 'skip_prk_steps': True},
    },
    'sd21': {  # stabilityai/stable-diffusion-2-1: OpenCLIP ViT-H text (23 layers), v, DDIM
        'unet': {
            **_UNET,
            'attention_head_dim': (5, 10, 20, 20),
            'cross_attention_dim': 1024,
            'sample_size': 96,
            'upcast_attention': True,
            'use_linear_projection': True,
        },
        'vae': {**_VAE, 'sample_size': 768},
        'text_encoder': {
            **_TEXT,
            'hidden_act': 'gelu',
            'hidden_size': 1024,
            'intermediate_size': 4096,
            'num_attention_heads': 16,
            'num_hidden_layers': 23,
            'projection_dim': 512,
        },
        'scheduler': {**_SCHEDULE, 'prediction_type': 'v_prediction'},
    },
}

_SCHEDULERS: Final = {'sd15': PNDMScheduler, 'sd21': DDIMScheduler}
#: SD 2's tokenizer pads with "!" (id 0), as OpenCLIP does; SD 1.5's with the end token.
_PAD_TOKENS: Final = {'sd15': '<|endoftext|>', 'sd21': '!'}


def _model_index(arch: Architecture) -> dict[str, Any]:
    return {
        '_class_name': 'StableDiffusionPipeline',
        '_diffusers_version': diffusers.__version__,
        'feature_extractor': [None, None],
        'requires_safety_checker': False,
        'safety_checker': [None, None],
        'scheduler': ['diffusers', _SCHEDULERS[arch].__name__],
        'text_encoder': ['transformers', 'CLIPTextModel'],
        'tokenizer': ['transformers', 'CLIPTokenizer'],
        'unet': ['diffusers', 'UNet2DConditionModel'],
        'vae': ['diffusers', 'AutoencoderKL'],
    }


def random_base(
    arch: Architecture,
    out: str | Path,
    dtype: torch.dtype = torch.float16,
    seed: int = 0,
) -> Path:
    """Write a Stable Diffusion base of a published architecture with random weights.

    Every part (UNet, VAE, CLIP text encoder, tokenizer, scheduler, ``model_index.json``) has
    the hub folder's config (:data:`BASE_CONFIGS`), so the folder loads wherever the real
    base does (``base_model`` of a config, ``pretrained_parts``, diffusers' pipelines) and
    every shape, dtype and memory figure is the real one; only the images are noise. Built
    part by part, so the peak memory is the UNet's. Nothing is downloaded: the tokenizer is
    :func:`~.tokenizer.clip_tokenizer`'s.

    Args:
        arch: ``sd15`` (runwayml/stable-diffusion-v1-5) or ``sd21``
            (stabilityai/stable-diffusion-2-1, v-prediction).
        out: the folder to write (replaced as a whole when it exists).
        dtype: the weights' dtype on disk (float16 halves the folder, as the hub's fp16
            variants; loaders without ``torch_dtype`` upcast to float32).
        seed: initialisation seed.

    Returns:
        The folder.

    Raises:
        ValueError: for an unknown ``arch``.
    """
    if arch not in BASE_CONFIGS:
        raise ValueError(f'unknown architecture {arch!r}: expected one of {sorted(BASE_CONFIGS)}')
    configs = BASE_CONFIGS[arch]
    out = Path(out)
    with atomic_directory(out) as tmp:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**configs['unet'])
        unet.to(dtype).save_pretrained(tmp / 'unet')
        del unet
        vae = AutoencoderKL(**configs['vae'])
        vae.to(dtype).save_pretrained(tmp / 'vae')
        del vae
        text_encoder = CLIPTextModel(CLIPTextConfig(**configs['text_encoder']))
        text_encoder.to(dtype).save_pretrained(tmp / 'text_encoder')
        del text_encoder
        clip_tokenizer().save_pretrained(tmp / 'tokenizer')
        padded = CLIPTokenizer.from_pretrained(tmp / 'tokenizer', pad_token=_PAD_TOKENS[arch])
        padded.save_pretrained(tmp / 'tokenizer')
        # from_config, as the hub's files load: it ignores fields a class does not take
        _SCHEDULERS[arch].from_config(configs['scheduler']).save_pretrained(tmp / 'scheduler')
        index = json.dumps(_model_index(arch), indent=2)
        (tmp / 'model_index.json').write_text(index + '\n')
    return out
