# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Multispectral generators: which generator band fills each dataset band, and at what scale.

A generator that declares its bands (a ``bands`` attribute, a
:class:`~torchgeo_earthsynth.encodings.bands.SpectralBands`) writes every band in 0..255;
:class:`BandMap` takes its images into a dataset's own bands, in the dataset's channel
order, and into its pixel scale: 0..255 -> physical units (the generator's per-band
ranges) -> dataset pixels (x the dataset's ``pixels_per_unit``, or ``image_scale``),
clamped to the dataset's pixel range. Generators without ``bands`` (and those whose bands
are plain RGB 0..255) keep the RGB path of :mod:`.synthetic_scale`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from torchgeo_earthsynth.encodings.bands import SpectralBands, canonical_band
from torchgeo_earthsynth.encodings.registry import DatasetEncoding, SelectBands

from .synthetic_scale import check_datamodule, synthetic_gain

#: Canonical names of plain RGB bands, in R, G, B order.
_RGB_CANONICAL = tuple(canonical_band(name) for name in ('R', 'G', 'B'))


def generator_bands(generator: object | None) -> SpectralBands | None:
    """The bands a generator declares, or None for a plain RGB 0..255 generator.

    Read with ``getattr(generator, 'bands', None)``. A
    :class:`~.synthetic_loader.SynthesizerLoader` knows them before it builds its
    synthesizer (a local export's VAE config). Bands that are
    R, G, B in 0..255 digital numbers (what RGB generators declare) count as RGB too, so
    today's checks and messages apply to them.

    Args:
        generator: a synthesizer, a loader, or anything with ``generate``; None for none.

    Returns:
        The generator's bands, or None when it is plain RGB 0..255.

    Raises:
        ValueError: if ``bands`` is neither None nor a ``SpectralBands``.
    """
    bands = getattr(generator, 'bands', None)  # a SynthesizerLoader's, without building it
    if bands is None:
        return None
    if not isinstance(bands, SpectralBands):
        raise ValueError(
            f'the generator {type(generator).__name__}.bands must be a SpectralBands '
            f'(torchgeo_earthsynth.encodings.bands) or None, got {type(bands).__name__}'
        )
    names = tuple(canonical_band(name) for name in bands.names)
    plain = (
        names == _RGB_CANONICAL
        and bands.units == 'dn8'
        and all(low == 0 for low in bands.minimum)
        and all(high == 255 for high in bands.maximum)
    )
    return None if plain else bands


def loaded_bands(encoding: DatasetEncoding, datamodule: Any | None) -> tuple[str, ...]:
    """The bands a datamodule's dataset loads, in channel order.

    Its band option (EuroSAT's ``bands``) where given, else the bands a
    :class:`~torchgeo_earthsynth.encodings.registry.SelectBands` in its ``transforms``
    keeps, else the dataset's default bands: its ``dataset_class.all_band_names`` (names
    and order) where those are the registry's bands, so the map follows the channel order
    the dataset class loads and messages name what its band option takes.

    Args:
        encoding: the dataset's encoding.
        datamodule: the datamodule (its ``kwargs`` are read), or None for the defaults.

    Returns:
        The band names.

    Raises:
        ValueError: if a ``SelectBands`` index is not a band of the dataset.
    """
    kwargs = getattr(datamodule, 'kwargs', {}) or {}
    if encoding.band_option is not None and encoding.band_option in kwargs:
        return tuple(str(name) for name in kwargs[encoding.band_option])
    selector = kwargs.get('transforms')
    if isinstance(selector, SelectBands):
        outside = [i for i in selector.indices if not 0 <= i < len(encoding.bands)]
        if outside:
            raise ValueError(
                f'SelectBands{selector.indices}: indices {outside} are not bands of '
                f'{encoding.name} {encoding.bands}'
            )
        return tuple(encoding.bands[i] for i in selector.indices)
    # the dataset class's own names and order of its default bands, where it has them
    # (a registry entry may spell or order them otherwise)
    own = getattr(getattr(datamodule, 'dataset_class', None), 'all_band_names', None)
    if own is not None and sorted(canonical_band(b) for b in own) == sorted(
        canonical_band(b) for b in encoding.bands
    ):
        return tuple(str(name) for name in own)
    return encoding.bands


@dataclass(frozen=True)
class BandMap:
    """A generator's 0..255 bands -> a dataset's bands, in its order and pixel scale.

    Attributes:
        dataset: the dataset's name, for messages.
        loaded: the dataset's band names, in its channel order.
        source: the generator's bands.
        indices: the generator channel of each dataset band.
        factor: physical value x ``factor`` = dataset pixel value.
        pixel_max: the top of the dataset's pixel range (the range is ``0..pixel_max``).
        dtype: the dataset's image dtype (integer dtypes get rounded pixels).

    .. versionadded:: 0.2
    """

    dataset: str
    loaded: tuple[str, ...]
    source: SpectralBands
    indices: tuple[int, ...]
    factor: float
    pixel_max: float
    dtype: torch.dtype

    def __len__(self) -> int:
        """The dataset's band count."""
        return len(self.indices)

    @property
    def gain(self) -> float:
        """The largest dataset pixel value per synthetic unit (for the batch checks)."""
        top = max(self.source.maximum[i] for i in self.indices)
        return float(top * self.factor / 255)

    def __call__(self, images: Tensor) -> Tensor:
        """Generated images -> dataset pixels.

        Args:
            images: float [..., C, H, W], every generator band in 0..255.

        Returns:
            float [..., len(loaded), H, W] in the dataset's bands and pixel range (rounded
            where the dataset's dtype is an integer one).

        Raises:
            ValueError: if ``images`` do not have the generator's band count.
        """
        if images.dim() < 3 or images.shape[-3] != len(self.source):
            raise ValueError(
                f'the generator returned images of shape {tuple(images.shape)}, but its bands '
                f'are {len(self.source)} {list(self.source.names)} ([..., C, H, W])'
            )
        physical = self.source.to_physical(images.float())
        index = torch.tensor(self.indices, device=images.device)
        pixels = (physical.index_select(-3, index) * self.factor).clamp(0, self.pixel_max)
        return pixels if self.dtype.is_floating_point else pixels.round()


def band_map(
    encoding: DatasetEncoding,
    bands: SpectralBands,
    loaded: Sequence[str],
    image_scale: float | None = None,
) -> BandMap:
    """The map from a generator's bands to the bands a dataset loads.

    Args:
        encoding: the dataset's encoding (units, ``pixels_per_unit``, pixel range).
        bands: the generator's bands.
        loaded: the dataset's loaded bands, in channel order (:func:`loaded_bands`).
        image_scale: physical value x this = dataset pixel value; wins over the
            encoding's ``pixels_per_unit`` and is required where the units differ.

    Returns:
        The band map.

    Raises:
        ValueError: naming the dataset bands the generator lacks (with the dataset and the
            generator's bands), units that differ without ``image_scale``, or
            ``image_scale`` <= 0.
    """
    have = {canonical_band(name) for name in bands.names}
    missing = [name for name in loaded if canonical_band(name) not in have]
    if missing:
        covered = [name for name in loaded if canonical_band(name) in have]
        hint = (
            f'; load only bands the generator has ({encoding.band_option}={tuple(covered)})'
            if encoding.band_option is not None and covered
            else ''
        )
        raise ValueError(
            f'{encoding.name} loads bands {list(loaded)}, but the generator bands '
            f'{list(bands.names)} lack {missing}: synthetic samples cannot fill them{hint}'
        )
    if image_scale is not None and image_scale <= 0:
        raise ValueError(f'image_scale must be > 0, got {image_scale}')
    if image_scale is None and bands.units != encoding.units:
        raise ValueError(
            f'the generator bands {list(bands.names)} are in {bands.units!r} units but '
            f'{encoding.name} pixels are {encoding.units!r} ({encoding.describe_image()}), '
            'and no conversion between them is known: pass image_scale=<factor> (generator '
            f'physical value x factor = {encoding.name} pixel value)'
        )
    factor = float(image_scale) if image_scale is not None else encoding.pixels_per_unit
    return BandMap(
        encoding.name,
        tuple(loaded),
        bands,
        bands.indices(loaded),
        factor,
        encoding.pixel_max,
        encoding.dtype,
    )


def check_normalisation(encoding: DatasetEncoding, datamodule: Any, mapped: BandMap) -> None:
    """Check a datamodule normalises the mapped bands, in the dataset's pixel scale.

    Args:
        encoding: the dataset's encoding.
        datamodule: the datamodule (``mean`` and ``std`` are read if there).
        mapped: the generator's band map.

    Raises:
        ValueError: if ``mean`` or ``std`` has another band count than 1 or the loaded
            bands', or the mean is above the dataset's pixel range.
    """
    mean = torch.as_tensor(getattr(datamodule, 'mean', 0.0), dtype=torch.float64).flatten()
    std = torch.as_tensor(getattr(datamodule, 'std', 1.0), dtype=torch.float64).flatten()
    for name, value in (('mean', mean), ('std', std)):
        if value.numel() not in (1, len(mapped)):
            raise ValueError(
                f'the datamodule normalises {value.numel()} bands ({name} {value.tolist()}), '
                f'but {encoding.name} loads {len(mapped)} bands {list(mapped.loaded)}'
            )
    if float(mean.max()) > encoding.pixel_max * 1.001:
        raise ValueError(
            f'the datamodule normalises with mean {mean.tolist()}, above {encoding.name} '
            f'images ({encoding.describe_image()})'
        )


def fit_sources(
    encoding: DatasetEncoding,
    generator: object | None,
    source: str,
    image_scale: float | None,
    add_to_bank: bool = False,
    datamodule: Any | None = None,
) -> BandMap | None:
    """The generator's band map, after checking every source suits the dataset.

    RGB rows (bank samples, an RGB generator) are checked as before
    (:func:`~.synthetic_scale.check_datamodule`, with a datamodule); a multispectral
    generator's bands must cover the loaded bands (:func:`band_map`).

    Args:
        encoding: the dataset's encoding.
        generator: the synthesizer (or loader), None when only the bank is drawn from.
        source: ``online``, ``bank`` or ``both``.
        image_scale: the user's factor (see :func:`band_map`), if any.
        add_to_bank: whether generated samples are banked.
        datamodule: the datamodule, when attached; None reads the dataset's default bands.

    Returns:
        The generator's band map, or None when generated rows are plain RGB.

    Raises:
        ValueError: if a source's images cannot stand in for the dataset's (see above),
            or a multispectral generator's samples would go into an RGB bank.
    """
    bands = generator_bands(generator) if source != 'bank' else None
    if bands is None:
        if datamodule is not None:
            check_datamodule(encoding, datamodule, synthetic_gain(encoding, image_scale))
        return None
    if add_to_bank:
        raise ValueError(
            f'add_to_bank=True needs an RGB generator: banks hold RGB 0..255 samples, the '
            f'generator bands are {list(bands.names)}'
        )
    mapped = band_map(encoding, bands, loaded_bands(encoding, datamodule), image_scale)
    if source == 'both':  # bank rows are RGB 0..255, in the same batch
        if datamodule is not None:
            check_datamodule(encoding, datamodule, synthetic_gain(encoding, image_scale))
        elif len(mapped) != 3:
            raise ValueError(
                f"source='both': bank samples are RGB but {encoding.name} loads "
                f'{len(mapped)} bands {list(mapped.loaded)}; use source="online"'
            )
    elif datamodule is not None:
        check_normalisation(encoding, datamodule, mapped)
    return mapped


__all__ = (
    'BandMap',
    'band_map',
    'check_normalisation',
    'fit_sources',
    'generator_bands',
    'loaded_bands',
)
