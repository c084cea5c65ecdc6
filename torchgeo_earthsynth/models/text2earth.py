# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The Text2Earth family: SD-2-style text-to-image with a resolution level as ``class_labels``."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import torch
from torch import Tensor, nn

from torchgeo_earthsynth.conditions import METADATA_FIELDS, check_metadata
from torchgeo_earthsynth.models.stable_diffusion import DiffusionParts, pretrained_parts

__all__ = (
    'TEXT2EARTH_DEFAULTS',
    'TEXT2EARTH_ID',
    'TEXT2EARTH_INPAINTING_ID',
    'TEXT2EARTH_LEVELS',
    'UNKNOWN_LEVEL',
    'check_no_level_prefix',
    'gsd_to_level',
    'is_text2earth',
    'level_to_gsd',
    'resolution_levels',
    'split_level_prompt',
    'takes_levels',
    'text2earth_parts',
)

#: The released checkpoints (full diffusers folders; text-to-image and 9-channel inpainting).
TEXT2EARTH_ID: Final = 'lcybuaa/Text2Earth'
TEXT2EARTH_INPAINTING_ID: Final = 'lcybuaa/Text2Earth-inpainting'

#: Google Maps zoom levels of Git-10M: GSD = 2 ** (17 - level) m, 128 m (10) to 0.5 m (18).
TEXT2EARTH_LEVELS: Final = range(10, 19)
#: The level of an unknown resolution; their guidance's unconditional branch uses it too.
UNKNOWN_LEVEL: Final = 0

#: Their README's sampling set-up: Euler, 50 steps, guidance 4.0, 256 px (trained at 256
#: px although the UNet config says ``sample_size`` 64, i.e. 512 px).
TEXT2EARTH_DEFAULTS: Final[dict[str, Any]] = {
    'scheduler': 'euler',
    'num_inference_steps': 50,
    'guidance_scale': 4.0,
    'default_size': (256, 256),
}

#: Their pipelines' prompt protocol ``"{level}_GOOGLE_LEVEL_{caption}"``.
_LEVEL_PREFIX: Final = re.compile(r'^\s*(-?\d+)_GOOGLE_LEVEL_(.*)$', re.DOTALL)


def level_to_gsd(level: int) -> float:
    """Metres per pixel of a Text2Earth level: ``2 ** (17 - level)``.

    Raises:
        ValueError: if ``level`` is not one of :data:`TEXT2EARTH_LEVELS`.
    """
    if level not in TEXT2EARTH_LEVELS:
        raise ValueError(f'level must be one of 10..18, got {level!r}')
    return float(2 ** (17 - level))


def gsd_to_level(gsd: Tensor) -> Tensor:
    """The nearest Text2Earth level of each GSD (metres per pixel); NaN (unknown) -> 0.

    Nearest in log scale, the scale of the levels: ``round(17 - log2(gsd))`` within 10..18.

    Args:
        gsd: float [B] metres per pixel, NaN where unknown.

    Returns:
        int64 [B] levels.

    Raises:
        ValueError: for a GSD that is not positive, or more than one level beyond the
            0.5-128 m of the levels (below 0.25 m or above 256 m), naming the sample.
    """
    gsd = gsd.double()
    known = ~torch.isnan(gsd)
    low, high = level_to_gsd(TEXT2EARTH_LEVELS[-1]) / 2, level_to_gsd(TEXT2EARTH_LEVELS[0]) * 2
    bad = known & ~((gsd >= low) & (gsd <= high))
    if bad.any():
        index = int(bad.nonzero()[0, 0])
        raise ValueError(
            f'metadata gsd of sample {index}: {float(gsd[index])} m/px is outside the {low}-{high} '
            'm Text2Earth covers (levels 10..18 = 128..0.5 m/px); NaN means unknown (level 0)'
        )
    levels = torch.round(17 - torch.log2(torch.where(known, gsd, 1.0)))
    levels = levels.clamp(TEXT2EARTH_LEVELS[0], TEXT2EARTH_LEVELS[-1]).long()
    return torch.where(known, levels, UNKNOWN_LEVEL)


def _check_levels(levels: Sequence[int] | Tensor, count: int) -> Tensor:
    values = torch.as_tensor(levels)
    if values.ndim != 1 or len(values) != count:
        raise ValueError(f'levels: expected {count} levels (one per prompt), got {values.tolist()}')
    if values.is_floating_point() and not torch.equal(values, values.round()):
        raise ValueError(f'levels must be integers, got {values.tolist()}')
    for index, level in enumerate(values.long().tolist()):
        if level != UNKNOWN_LEVEL and level not in TEXT2EARTH_LEVELS:
            raise ValueError(
                f'levels[{index}] = {level}: a Text2Earth level is 0 (unknown resolution) or '
                '10..18 (Google Maps zoom; GSD = 2 ** (17 - level) m/px)'
            )
    return values.long()


def resolution_levels(
    count: int, levels: Sequence[int] | Tensor | None = None, metadata: Tensor | None = None
) -> Tensor:
    """The level of each sample: explicit ``levels``, else from ``metadata``'s GSD, else 0.

    Args:
        count: the number of samples.
        levels: 0 (unknown) or 10..18 per sample.
        metadata: float32 [B, 7] in physical units; only the GSD (metres per pixel) is
            used, mapped to the nearest level (:func:`gsd_to_level`).

    Returns:
        int64 [B] levels.

    Raises:
        ValueError: if both are given, or for a bad level, shape or GSD.
    """
    if levels is not None and metadata is not None:
        raise ValueError('pass levels= or metadata= (its GSD gives the level), not both')
    if levels is not None:
        return _check_levels(levels, count)
    if metadata is not None:
        gsd = check_metadata(metadata, count)[:, METADATA_FIELDS.index('gsd')]
        return gsd_to_level(gsd.cpu())
    return torch.full((count,), UNKNOWN_LEVEL, dtype=torch.long)


def split_level_prompt(prompt: str) -> tuple[int, str]:
    """``"{level}_GOOGLE_LEVEL_{caption}"`` (their prompt protocol) -> (level, caption).

    For captions written in that protocol (Git-10M style); a prompt without the prefix has
    level 0, as in their pipelines. The synthesizer never parses prompts itself.

    Raises:
        ValueError: for a prefix whose level is not 0 or 10..18.
    """
    match = _LEVEL_PREFIX.match(prompt)
    if match is None:
        return UNKNOWN_LEVEL, prompt
    level = int(_check_levels([int(match.group(1))], 1)[0])
    return level, match.group(2)


def check_no_level_prefix(prompts: Sequence[str]) -> None:
    """Refuse prompts in their ``"{level}_GOOGLE_LEVEL_"`` protocol (we never parse prompts).

    Raises:
        ValueError: naming the first such prompt and what to do instead.
    """
    for index, prompt in enumerate(prompts):
        if _LEVEL_PREFIX.match(prompt):
            raise ValueError(
                f'prompts[{index}] = {prompt!r} carries the "{{level}}_GOOGLE_LEVEL_" prefix of '
                "Text2Earth's pipeline; pass the caption alone and levels=[...] or metadata "
                '(GSD), e.g. via split_level_prompt'
            )


def takes_levels(unet: nn.Module) -> bool:
    """Whether a UNet takes a resolution level: a ``timestep`` class embedding (Text2Earth)."""
    config = getattr(unet, 'config', None)
    return (
        getattr(unet, 'class_embedding', None) is not None
        and getattr(config, 'class_embed_type', None) == 'timestep'
    )


def is_text2earth(source: str | Path) -> bool:
    """Whether ``source`` is a Text2Earth folder (or one of the released hub ids).

    A folder is Text2Earth when it holds a full pipeline (``model_index.json``) whose
    ``unet/config.json`` has a ``timestep`` class embedding.
    """
    if str(source) in (TEXT2EARTH_ID, TEXT2EARTH_INPAINTING_ID):
        return True
    path = Path(source)
    config = path / 'unet' / 'config.json'
    if not (path / 'model_index.json').is_file() or not config.is_file():
        return False
    class_embed_type = json.loads(config.read_text()).get('class_embed_type')
    return bool(class_embed_type == 'timestep')


def text2earth_parts(source: str | Path) -> DiffusionParts:
    """Text2Earth's parts, loaded with stock diffusers/transformers classes.

    Args:
        source: ``lcybuaa/Text2Earth``, ``lcybuaa/Text2Earth-inpainting`` or a folder in
            their layout (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
            ``scheduler/``).

    Returns:
        The parts (the scheduler is replaced by the synthesizer's sampler).

    Raises:
        ValueError: if the UNet has no ``timestep`` class embedding (not Text2Earth).
    """
    parts = pretrained_parts(source)
    if not takes_levels(parts.unet):
        raise ValueError(
            f'{source}: the UNet has no timestep class embedding (class_embed_type '
            f'{parts.unet.config.class_embed_type!r}); not a Text2Earth checkpoint'
        )
    return parts
