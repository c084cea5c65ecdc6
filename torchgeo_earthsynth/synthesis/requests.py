# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""What a :class:`.Synthesizer` request must hold for its family: checks, sizes, metadata."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import torch
from torch import Tensor

from torchgeo_earthsynth.conditions import METADATA_FIELDS, NUM_METADATA, check_metadata
from torchgeo_earthsynth.models import check_no_level_prefix, normalize_metadata

if TYPE_CHECKING:
    from torchgeo_earthsynth.synthesis.synthesizer import Synthesizer

#: Sentinel-2's GSD, the low-res metadata of their fMoW super-resolution training.
_LOW_RES_GSD: Final = 10.0


def check_request(
    synth: Synthesizer,
    masks: Tensor | None,
    prompts: Sequence[str],
    metadata: Tensor | None,
    low_res: Tensor | None = None,
    low_res_metadata: Tensor | None = None,
    image: Tensor | None = None,
) -> int:
    """Refuse a request lacking a condition the family needs; return its batch size.

    Raises:
        ValueError: naming the condition that is missing, not taken, or of the wrong shape.
    """
    if synth.inpaints_only and image is None:
        raise ValueError(
            'this synthesizer is an inpainting model (9-channel UNet): generate needs '
            'image [B, 3, H, W] and inpaint_mask [B, H, W]'
        )
    if synth.takes_levels:
        check_no_level_prefix(prompts)
    family = 'a mask ControlNet' if synth.takes_masks else 'a text-to-image model'
    family = 'a super-resolution ControlNet' if synth.takes_low_res else family
    family = 'a multi-condition ControlNet (controls=)' if synth.takes_controls else family
    if synth.takes_masks and masks is None:
        raise ValueError(f'this synthesizer is {family}: generate needs masks [B, H, W]')
    if not synth.takes_masks and masks is not None:
        raise ValueError(f'this synthesizer is {family}: it takes no masks (pass None)')
    if synth.takes_low_res and low_res is None:
        raise ValueError(f'this synthesizer is {family}: generate needs low_res [B, C, h, w]')
    if not synth.takes_low_res and (low_res is not None or low_res_metadata is not None):
        raise ValueError(f'this synthesizer is {family}: it takes no low_res (pass None)')
    if synth.needs_metadata and metadata is None:
        raise ValueError(
            'this synthesizer is conditioned on metadata: generate needs metadata=[B, 7] '
            '(lon, lat, gsd, cloud_cover, year, month, day; NaN where unknown)'
        )
    if not synth.takes_metadata and metadata is not None:
        raise ValueError('this synthesizer is not conditioned on metadata (pass None)')
    if masks is not None:
        if masks.dim() != 3:
            raise ValueError(f'expected masks [B, H, W], got shape {tuple(masks.shape)}')
        if len(prompts) != len(masks):
            raise ValueError(f'{len(masks)} masks but {len(prompts)} prompts')
    if low_res is not None:
        channels = synth.pipeline.controlnet.config.conditioning_in_channels
        if low_res.dim() != 4 or low_res.shape[1] != channels or len(low_res) != len(prompts):
            raise ValueError(
                f'low_res: expected [{len(prompts)}, {channels}, h, w] for {len(prompts)} '
                f'prompts (the ControlNet takes {channels} bands), got {list(low_res.shape)}'
            )
    for values in (metadata, low_res_metadata):
        if values is not None:
            check_metadata(values, len(prompts))
    return len(prompts)


def request_size(
    synth: Synthesizer,
    size: tuple[int, int] | None,
    masks: Tensor | None,
    low_res: Tensor | None,
    image: Tensor | None = None,
) -> tuple[int, int]:
    """The output (height, width): ``size`` or the default for the request.

    The default: the masks' or the image's size, the low-res image's upscaled, the
    synthesizer's ``default_size``, else the UNet's.

    Raises:
        ValueError: if it is no multiple of the VAE's downscale factor or does not fit
            ``low_res``.
    """
    pipeline = synth.pipeline
    height, width = size or _default_size(synth, masks, low_res, image)
    factor = pipeline.vae_scale_factor
    if height % factor or width % factor:
        raise ValueError(
            f'image size {height}x{width} must be a multiple of the VAE downscale factor {factor}'
        )
    if low_res is not None:
        downsample = pipeline.controlnet.condition_downsample
        expected = [height // factor * downsample, width // factor * downsample]
        if list(low_res.shape[-2:]) != expected:
            raise ValueError(
                f'low_res: {list(low_res.shape[-2:])} px does not fit a {height}x{width} output '
                f'(this ControlNet takes it at {expected} px)'
            )
    return height, width


def _default_size(
    synth: Synthesizer, masks: Tensor | None, low_res: Tensor | None, image: Tensor | None
) -> tuple[int, int]:
    for condition in (masks, image):
        if condition is not None:
            return int(condition.shape[-2]), int(condition.shape[-1])
    pipeline = synth.pipeline
    factor = pipeline.vae_scale_factor
    if low_res is not None:
        downsample = pipeline.controlnet.condition_downsample
        height, width = (int(side) // downsample * factor for side in low_res.shape[-2:])
        return height, width
    if synth.default_size is not None:
        return synth.default_size
    side = int(pipeline.unet.config.sample_size) * factor
    return side, side


def normalised_metadata(
    synth: Synthesizer,
    count: int,
    metadata: Tensor | None,
    low_res: Tensor | None,
    low_res_metadata: Tensor | None,
) -> tuple[Tensor | None, Tensor | None]:
    """The request's and its low-res image's metadata, normalised as the family was trained."""
    if not (synth.needs_metadata or synth._metadata_controlnets):
        return None, None  # none, or Text2Earth's (its GSD gives the level)
    if metadata is None:  # a mask ControlNet with metadata: all fields unknown
        metadata = torch.full((count, NUM_METADATA), math.nan)
    if low_res is None or not synth._metadata_controlnets:
        return normalize_metadata(metadata.float()), None
    if low_res_metadata is None:
        low_res_metadata = metadata.float().clone()
        low_res_metadata[:, METADATA_FIELDS.index('gsd')] = _LOW_RES_GSD
    return normalize_metadata(metadata.float()), normalize_metadata(low_res_metadata.float())


__all__ = ('check_request', 'normalised_metadata', 'request_size')
