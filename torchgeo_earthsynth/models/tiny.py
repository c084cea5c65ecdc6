# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Tiny configs of the Stable Diffusion parts, built in code (nothing downloaded)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from torchgeo_earthsynth.encodings.bands import SpectralBands
from torchgeo_earthsynth.models.diffusionsat import DiffusionSatUNet
from torchgeo_earthsynth.models.diffusionsat_controlnet import DiffusionSatControlNet
from torchgeo_earthsynth.models.multicontrol import NamedMultiControlNet
from torchgeo_earthsynth.models.multispectral import MultispectralAutoencoderKL
from torchgeo_earthsynth.models.stable_diffusion import DiffusionParts, sd_scheduler
from torchgeo_earthsynth.models.tokenizer import clip_tokenizer

TINY_TEXT_DIM: Final = 32
#: The tiny CLIP vision model's image embedding size (the real ViT-L/14's: 768).
TINY_IMAGE_DIM: Final = 16
#: The tiny VAE's downscale factors.
TINY_DOWNSCALES: Final = (1, 2)
#: The tiny UNet's channels per level, by VAE downscale (the lowest level has attention at
#: a quarter of the image size in both).
_UNET_CHANNELS: Final = {1: (16, 32, 64), 2: (32, 64)}

__all__ = (
    'TINY_DOWNSCALES',
    'TINY_IMAGE_DIM',
    'TINY_TEXT_DIM',
    'tiny_controlnet',
    'tiny_diffusionsat_controlnet',
    'tiny_diffusionsat_parts',
    'tiny_diffusionsat_unet',
    'tiny_image_encoder',
    'tiny_multicontrol',
    'tiny_multispectral_vae',
    'tiny_parts',
    'tiny_text2earth_parts',
    'tiny_text2earth_unet',
    'tiny_text_encoder',
    'tiny_unet',
    'tiny_vae',
)


def tiny_text_encoder(seed: int = 0) -> CLIPTextModel:
    """A 2-layer CLIP text model with SD's vocabulary and special tokens."""
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=TINY_TEXT_DIM,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        projection_dim=TINY_TEXT_DIM,
    )
    return CLIPTextModel(config)


def tiny_image_encoder(seed: int = 0, image_size: int = 32) -> CLIPVisionModelWithProjection:
    """A 2-layer CLIP vision model with a projection (the reference image's encoder)."""
    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=8,
        projection_dim=TINY_IMAGE_DIM,
    )
    return CLIPVisionModelWithProjection(config).eval()


def tiny_unet(
    seed: int = 0, sample_size: int = 32, block_out_channels: tuple[int, ...] = (32, 64)
) -> UNet2DConditionModel:
    """A small UNet, cross-attention at its lowest level only (latent 4 channels).

    Args:
        seed: initialisation seed.
        sample_size: latent size.
        block_out_channels: channels per level (two levels by default).
    """
    torch.manual_seed(seed)
    plain = len(block_out_channels) - 1
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=block_out_channels,
        down_block_types=('DownBlock2D',) * plain + ('CrossAttnDownBlock2D',),
        up_block_types=('CrossAttnUpBlock2D',) + ('UpBlock2D',) * plain,
        cross_attention_dim=TINY_TEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def _vae_blocks(downscale: int) -> int:
    if downscale not in TINY_DOWNSCALES:
        raise ValueError(f'the VAE downscale must be one of {TINY_DOWNSCALES}, got {downscale}')
    return TINY_DOWNSCALES.index(downscale) + 1


def tiny_vae(
    seed: int = 0, sample_size: int = 64, downscale: int = 2, width: int = 16, layers: int = 1
) -> AutoencoderKL:
    """A one- or two-block VAE: downscale factor 1 or 2, 4 latent channels.

    Args:
        seed: initialisation seed.
        sample_size: image size.
        downscale: 1 (one block) or 2 (two blocks, the second twice as wide).
        width: channels of the first block (a multiple of 8).
        layers: ResNet layers per block.
    """
    blocks = _vae_blocks(downscale)
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(width, 2 * width)[:blocks],
        down_block_types=('DownEncoderBlock2D',) * blocks,
        up_block_types=('UpDecoderBlock2D',) * blocks,
        layers_per_block=layers,
        norm_num_groups=8,
        sample_size=sample_size,
        scaling_factor=1.0,
    )


def tiny_multispectral_vae(
    bands: SpectralBands,
    seed: int = 0,
    sample_size: int = 64,
    downscale: int = 2,
    width: int = 16,
    layers: int = 1,
) -> MultispectralAutoencoderKL:
    """:func:`tiny_vae` over ``bands`` (a :class:`MultispectralAutoencoderKL` recording them)."""
    # tiny_vae's architecture; only the band count and the band fields differ
    config = {
        key: value
        for key, value in tiny_vae(seed, sample_size, downscale, width, layers).config.items()
        if not key.startswith('_') and key not in ('in_channels', 'out_channels')
    }
    torch.manual_seed(seed)
    vae: MultispectralAutoencoderKL = MultispectralAutoencoderKL(
        band_names=bands.names,
        band_minimum=bands.minimum,
        band_maximum=bands.maximum,
        band_units=bands.units,
        **config,
    )
    return vae


def tiny_parts(
    seed: int = 0,
    image_size: int = 64,
    prediction_type: str = 'epsilon',
    downscale: int = 2,
    vae_width: int = 16,
    vae_layers: int = 1,
) -> DiffusionParts:
    """Every Stable Diffusion part from small configs, built in code (nothing downloaded).

    Args:
        seed: initialisation seed.
        image_size: pixel size of the images.
        prediction_type: ``epsilon`` or ``v_prediction``.
        downscale: the VAE's downscale factor: 2 (latents half the image size, a two-level
            UNet) or 1 (latents at image size, a three-level UNet at about 1.2x the step
            cost: the VAE keeps the fine texture of 32 px tiles).
        vae_width: channels of the VAE's first block.
        vae_layers: ResNet layers per VAE block.

    Returns:
        The tiny parts.
    """
    vae = tiny_vae(seed + 1, image_size, downscale, vae_width, vae_layers)
    return DiffusionParts(
        unet=tiny_unet(seed, image_size // downscale, _UNET_CHANNELS[downscale]),
        vae=vae,
        text_encoder=tiny_text_encoder(seed + 2),
        tokenizer=clip_tokenizer(),
        scheduler=sd_scheduler(prediction_type),
    )


def tiny_controlnet(
    unet: UNet2DConditionModel, vae_downscale: int = 2, conditioning_channels: int = 3
) -> ControlNetModel:
    """A ControlNet copied from a tiny UNet, its condition embedding downscaling as the VAE."""
    channels = (16, 32)[: _vae_blocks(vae_downscale)]
    return ControlNetModel.from_unet(
        unet,
        conditioning_embedding_out_channels=channels,
        conditioning_channels=conditioning_channels,
    )


def tiny_multicontrol(
    unet: UNet2DConditionModel, channels: Mapping[str, int], vae_downscale: int = 2
) -> NamedMultiControlNet:
    """One tiny ControlNet per named control map, each taking its map's channel count.

    Args:
        unet: the tiny UNet the ControlNets are copied from.
        channels: ``{name: channels}``, e.g. ``{'road': 1, 'seg': 3}``.
        vae_downscale: the tiny VAE's downscale factor (1 or 2).
    """
    return NamedMultiControlNet(
        {name: tiny_controlnet(unet, vae_downscale, count) for name, count in channels.items()}
    )


def tiny_diffusionsat_unet(seed: int = 0, sample_size: int = 32) -> DiffusionSatUNet:
    """:func:`tiny_unet` with DiffusionSat's seven metadata embeddings."""
    unet = tiny_unet(seed, sample_size)
    torch.manual_seed(seed + 100)
    model: DiffusionSatUNet = DiffusionSatUNet.from_unet(unet)
    return model


def tiny_diffusionsat_parts(seed: int = 0, image_size: int = 64) -> DiffusionParts:
    """:func:`tiny_parts` with a metadata UNet and v-prediction, as DiffusionSat (SD 2.1)."""
    parts = tiny_parts(seed, image_size, prediction_type='v_prediction')
    parts.unet = tiny_diffusionsat_unet(seed, image_size // 2)
    return parts


def tiny_diffusionsat_controlnet(
    unet: DiffusionSatUNet, low_res_channels: int = 10
) -> DiffusionSatControlNet:
    """A super-resolution ControlNet for a tiny metadata UNet: the condition at half size.

    The tiny VAE downsamples 2x, so a condition at latent size (half the output) needs no
    strided block: ``conditioning_scale=8``, as SD's 8x VAE with a 64 px condition.
    """
    controlnet = ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=(16, 32), conditioning_channels=low_res_channels
    )
    model: DiffusionSatControlNet = DiffusionSatControlNet.from_controlnet(
        controlnet, metadata_from=unet, conditioning_scale=8
    )
    return model


def tiny_text2earth_unet(
    seed: int = 0, sample_size: int = 32, inpainting: bool = False
) -> UNet2DConditionModel:
    """:func:`tiny_unet` configured as Text2Earth's UNet.

    A ``timestep`` class embedding (the resolution level), SD 2's linear projections; 9
    input channels (latents, mask, masked-image latents) for the inpainting model.
    """
    # Without `_use_default_values`, which would reset the fields changed here.
    base = {k: v for k, v in tiny_unet(seed, sample_size).config.items() if not k.startswith('_')}
    config = {
        **base,
        'class_embed_type': 'timestep',
        'use_linear_projection': True,
        'in_channels': 9 if inpainting else 4,
    }
    torch.manual_seed(seed)
    unet: UNet2DConditionModel = UNet2DConditionModel.from_config(config)
    return unet


def tiny_text2earth_parts(
    seed: int = 0, image_size: int = 64, inpainting: bool = False
) -> DiffusionParts:
    """:func:`tiny_parts` with :func:`tiny_text2earth_unet` (epsilon prediction, as theirs)."""
    parts = tiny_parts(seed, image_size)
    parts.unet = tiny_text2earth_unet(seed, image_size // 2, inpainting)
    return parts
