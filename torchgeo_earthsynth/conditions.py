# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Generation conditions shared by every generator family (DESIGN.md "Conditions")."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import torch
from torch import Tensor

__all__ = ('METADATA_FIELDS', 'NUM_METADATA', 'check_metadata', 'metadata_from_record')

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
