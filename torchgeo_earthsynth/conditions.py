# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Generation conditions shared by every generator family (DESIGN.md "Conditions")."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from torchgeo_earthsynth.vocabulary import NUM_CLASSES, PALETTE

__all__ = (
    'METADATA_FIELDS',
    'NUM_METADATA',
    'ConditionEncoding',
    'check_metadata',
    'encode_condition',
    'metadata_from_record',
)

#: Metadata fields in physical units, in this order: degrees, degrees, metres per pixel,
#: fraction 0..1, calendar year, month 1..12, day 1..31. NaN marks an unknown value.
METADATA_FIELDS: Final[tuple[str, ...]] = (
    'lon',
    'lat',
    'gsd',
    'cloud_cover',
    'year',
    'month',
    'day',
)
NUM_METADATA: Final = len(METADATA_FIELDS)


def metadata_from_record(record: Mapping[str, Any] | None) -> Tensor:
    """Metadata float32 [7] from a JSONL ``metadata`` object (missing or null fields: NaN).

    Args:
        record: e.g. ``{"lon": 2.35, "lat": 48.85, "gsd": 0.5, "year": 2021}``.

    Returns:
        float32 [7] in :data:`METADATA_FIELDS` order.

    Raises:
        ValueError: for a field name not in :data:`METADATA_FIELDS` or a non-numeric value.
    """
    values = [math.nan] * NUM_METADATA
    for name, value in (record or {}).items():
        if name not in METADATA_FIELDS:
            raise ValueError(f'unknown metadata field {name!r}; expected one of {METADATA_FIELDS}')
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f'metadata field {name!r}: expected a number or null, got {value!r}')
        values[METADATA_FIELDS.index(name)] = float(value)
    return torch.tensor(values, dtype=torch.float32)


def check_metadata(metadata: Tensor, batch_size: int) -> Tensor:
    """Check a metadata batch's shape and return it as float32.

    Args:
        metadata: [B, 7] in physical units, NaN where unknown.
        batch_size: B, the number of samples of the request.

    Returns:
        The metadata as float32.

    Raises:
        ValueError: if the shape is not [batch_size, 7].
    """
    if metadata.ndim != 2 or tuple(metadata.shape) != (batch_size, NUM_METADATA):
        raise ValueError(
            f'metadata: expected shape [{batch_size}, {NUM_METADATA}] '
            f'({", ".join(METADATA_FIELDS)}), got {list(metadata.shape)}'
        )
    return metadata.float()


ConditionEncoding = Literal['grey', 'palette']


def encode_condition(
    mask: Tensor, size: tuple[int, int] | None = None, encoding: ConditionEncoding = 'grey'
) -> Tensor:
    """The ControlNet condition of class-index masks, in [0, 1].

    ``grey`` is compatible with the released EarthSynth weights: ``id / 255`` in all three
    channels. ``palette`` uses the display palette's colours. Resized NEAREST.

    Args:
        mask: int [B, H, W] vocabulary ids.
        size: output (height, width), default the mask's.
        encoding: ``grey`` or ``palette``.

    Returns:
        float32 [B, 3, H, W] condition images.
    """
    if mask.dim() != 3:
        raise ValueError(f'expected masks [B, H, W], got shape {tuple(mask.shape)}')
    match encoding:
        case 'grey':
            cond = (mask.float() / 255).unsqueeze(1).expand(-1, 3, -1, -1)
        case 'palette':
            palette = torch.as_tensor(PALETTE, device=mask.device).float() / 255
            cond = palette[mask.long().clamp(0, NUM_CLASSES - 1)].permute(0, 3, 1, 2)
        case _:
            raise ValueError(f"condition encoding must be 'grey' or 'palette', got {encoding!r}")
    if size is not None and tuple(cond.shape[-2:]) != tuple(size):
        cond = F.interpolate(cond, size=size, mode='nearest')
    return cond.contiguous()
