# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Synthesis building blocks: condition images, pipelines over shared parts, checks of sources."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Literal

import torch
from diffusers import (
    ControlNetModel,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UNet2DConditionModel,
    UniPCMultistepScheduler,
)

SchedulerName = Literal['unipc', 'ddim', 'dpm', 'euler']
SCHEDULERS: Final = {
    'unipc': UniPCMultistepScheduler,
    'ddim': DDIMScheduler,
    'dpm': DPMSolverMultistepScheduler,
    'euler': EulerDiscreteScheduler,
}
Family = Literal[
    'earthsynth',
    'diffusionsat',
    'diffusionsat_sr',
    'text2earth',
    'text2earth_inpainting',
    'multicontrol',
    'multispectral',
]


def _looks_local(source: str | Path) -> bool:
    """Whether ``source`` names a local path rather than a hub id (``org/name``)."""
    text = str(source)
    return (
        isinstance(source, Path)
        or Path(text).exists()
        or text.startswith(('/', '.', '~'))
        or text.count('/') > 1
        or '\\' in text
    )


def _check_exists(source: str | Path, what: str) -> None:
    if _looks_local(source) and not Path(source).expanduser().exists():
        raise FileNotFoundError(
            f'{what} {str(source)!r} does not exist (expected a diffusers '
            'folder made with save_pretrained, or a hub id)'
        )


#: Config fields a ControlNet must share with the UNet it steers.
_MATCHING_FIELDS: Final = (
    'cross_attention_dim',
    'block_out_channels',
    'in_channels',
    'layers_per_block',
)


def check_compatible(
    controlnet: ControlNetModel,
    unet: UNet2DConditionModel,
    text_encoder: torch.nn.Module | None = None,
    controlnet_source: str = 'controlnet',
    base_source: str = 'base',
) -> None:
    """Check that a ControlNet can steer a base UNet (and its text encoder).

    Args:
        controlnet: the ControlNet.
        unet: the base UNet.
        text_encoder: the base text encoder (its hidden size must be the cross-attention
            width).
        controlnet_source: where the ControlNet came from (for the message).
        base_source: where the base came from (for the message).

    Raises:
        ValueError: naming both sources and every mismatching field.
    """
    cn, un = controlnet.config, unet.config
    problems = [
        f'{field} {getattr(cn, field)!r} != {getattr(un, field)!r}'
        for field in _MATCHING_FIELDS
        if _as_tuple(getattr(cn, field, None)) != _as_tuple(getattr(un, field, None))
    ]
    hidden = getattr(getattr(text_encoder, 'config', None), 'hidden_size', None)
    if hidden is not None and hidden != un.cross_attention_dim:
        problems.append(
            f'text encoder hidden_size {hidden} != UNet cross_attention_dim '
            f'{un.cross_attention_dim!r}'
        )
    if problems:
        raise ValueError(
            f'ControlNet {controlnet_source!r} does not fit the base {base_source!r}: '
            + '; '.join(problems)
            + ' (a ControlNet only works with the base it was trained on, e.g. SD 1.5)'
        )


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value


def _raise_if_unreachable(source: str | Path, error: BaseException) -> None:
    """Say first that a hub id could not be fetched, when that is why loading failed.

    diffusers reports a hub id it can neither download nor find in the cache as "does not
    appear to have a file named config.json"; the cause is in the exception chain.

    Raises:
        ValueError: if ``error`` comes from a file neither on reach nor in the local cache.
    """
    from huggingface_hub.errors import LocalEntryNotFoundError

    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, LocalEntryNotFoundError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        raise ValueError(
            f'{source}: cannot reach the Hub and not in the local cache (offline, or no '
            'network); download it once where the Hub is reachable, or pass a local '
            f'diffusers folder ({error})'
        ) from error


__all__ = (
    'SCHEDULERS',
    'Family',
    'SchedulerName',
    'check_compatible',
)
