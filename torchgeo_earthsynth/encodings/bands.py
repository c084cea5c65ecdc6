# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Spectral bands of a generator or a dataset: names, physical ranges and units.

A generator writes every band in 0..255 (the sampling core's scale, any band count); its
:class:`SpectralBands` says what 0 and 255 mean in physical units per band. Datasets name
their bands in their own way (EuroSAT ``B04``, Potsdam ``R``): :func:`canonical_band`
folds the common names of red, green, blue and near infrared onto Sentinel-2's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import torch
from torch import Tensor

#: Units of a band's physical range: surface/top-of-atmosphere reflectance (0..1), or an
#: 8-bit sensor's digital numbers (0..255, aerial orthophotos such as ISPRS Potsdam).
Units = Literal['reflectance', 'dn8']

#: Sentinel-2 MSI's 13 bands in band-number order (EuroSAT loads B8A last: match by name).
SENTINEL2_BANDS: Final[tuple[str, ...]] = (
    'B01',
    'B02',
    'B03',
    'B04',
    'B05',
    'B06',
    'B07',
    'B08',
    'B08A',
    'B09',
    'B10',
    'B11',
    'B12',
)

#: Common names of the bands every optical sensor shares -> Sentinel-2's names.
ALIASES: Final[dict[str, str]] = {
    'blue': 'B02',
    'b': 'B02',
    'green': 'B03',
    'g': 'B03',
    'red': 'B04',
    'r': 'B04',
    'nir': 'B08',
    'ir': 'B08',
    'b8a': 'B08A',
}


def canonical_band(name: str) -> str:
    """A band's Sentinel-2 name (``'R'`` -> ``'B04'``, ``'B8A'`` -> ``'B08A'``)."""
    return ALIASES.get(name.lower(), name.upper())


@dataclass(frozen=True)
class SpectralBands:
    """The bands an image holds and the physical range its 0..255 spans per band.

    Attributes:
        names: band names, in channel order.
        minimum: the physical value 0 stands for, per band.
        maximum: the physical value 255 stands for, per band.
        units: the physical values' units.

    .. versionadded:: 0.2
    """

    names: tuple[str, ...]
    minimum: tuple[float, ...]
    maximum: tuple[float, ...]
    units: Units = 'reflectance'

    def __post_init__(self) -> None:
        """Check one range per band, each increasing, and distinct names.

        Raises:
            ValueError: naming the band at fault.
        """
        count = len(self.names)
        if not count or len(self.minimum) != count or len(self.maximum) != count:
            raise ValueError(
                f'{count} band names but {len(self.minimum)} minima and {len(self.maximum)} '
                'maxima: give one range per band'
            )
        canonical = [canonical_band(name) for name in self.names]
        if len(set(canonical)) != count:
            raise ValueError(f'band names repeat: {self.names}')
        for name, low, high in zip(self.names, self.minimum, self.maximum):
            if not high > low:
                raise ValueError(f'band {name}: maximum {high} must exceed minimum {low}')

    def __len__(self) -> int:
        """The band count."""
        return len(self.names)

    def indices(self, wanted: Sequence[str]) -> tuple[int, ...]:
        """Where each wanted band is among these (names matched through :data:`ALIASES`).

        Raises:
            ValueError: naming every wanted band these bands do not hold.
        """
        position = {canonical_band(name): i for i, name in enumerate(self.names)}
        missing = [name for name in wanted if canonical_band(name) not in position]
        if missing:
            raise ValueError(
                f'bands {missing} are not among the generator bands {list(self.names)}'
            )
        return tuple(position[canonical_band(name)] for name in wanted)

    def to_physical(self, images: Tensor) -> Tensor:
        """0..255 per band [..., C, H, W] -> physical units."""
        low, high = self._ranges(images)
        return low + images / 255 * (high - low)

    def from_physical(self, values: Tensor) -> Tensor:
        """Physical units [..., C, H, W] -> 0..255 per band (not clamped)."""
        low, high = self._ranges(values)
        return (values - low) / (high - low) * 255

    def _ranges(self, like: Tensor) -> tuple[Tensor, Tensor]:
        if like.shape[-3] != len(self):
            raise ValueError(
                f'images have {like.shape[-3]} bands, expected {len(self)} {list(self.names)}'
            )
        shape = (len(self), 1, 1)
        low = torch.tensor(self.minimum, dtype=like.dtype, device=like.device).view(shape)
        high = torch.tensor(self.maximum, dtype=like.dtype, device=like.device).view(shape)
        return low, high


__all__ = ('ALIASES', 'SENTINEL2_BANDS', 'SpectralBands', 'Units', 'canonical_band')
