# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""EarthSynthMiniMultispectral: the mini corpus's scenes as 13 Sentinel-2 bands or 4 RGBI bands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Final, Literal, get_args

import torch
from matplotlib.figure import Figure
from torch import Tensor

from torchgeo_earthsynth.compat import NonGeoDataset
from torchgeo_earthsynth.datasets.mini import EarthSynthMini
from torchgeo_earthsynth.datasets.mini_superres import _FULL_SCALE, render_bands
from torchgeo_earthsynth.datasets.plotting import colorized, plot_panels
from torchgeo_earthsynth.encodings.bands import SENTINEL2_BANDS, SpectralBands, canonical_band
from torchgeo_earthsynth.models import SENTINEL2_LOW_RES_BANDS

__all__ = (
    'MULTISPECTRAL_BANDS',
    'EarthSynthMiniMultispectral',
    'Variant',
    'rgb_composite',
    'sentinel2_bands',
)

#: The band sets a mini multispectral corpus renders.
Variant = Literal['sentinel2', 'rgbi']

#: Each variant's bands and their physical ranges: Sentinel-2 L1C-like reflectance, or an
#: 8-bit aerial camera's digital numbers (ISPRS Potsdam's R, G, B, IR orthophotos).
MULTISPECTRAL_BANDS: Final[dict[str, SpectralBands]] = {
    'sentinel2': SpectralBands(SENTINEL2_BANDS, (0.0,) * 13, (1.0,) * 13, 'reflectance'),
    'rgbi': SpectralBands(('R', 'G', 'B', 'IR'), (0.0,) * 4, (255.0,) * 4, 'dn8'),
}
#: Reflectance of the RGB's full scale (255): visible reflectance stays below NIR's plateau.
_VISIBLE_SCALE: Final = 0.3


def _padded(name: str) -> str:
    """DiffusionSat's ``B4``/``B8A`` -> :data:`SENTINEL2_BANDS`' ``B04``/``B08A``."""
    name = canonical_band(name)
    digits = name[1:].rstrip('A')
    return f'B{int(digits):02d}{name[1 + len(digits) :]}'


def sentinel2_bands(image: Tensor, mask: Tensor) -> Tensor:
    """A scene's 13 Sentinel-2 bands as reflectance, in :data:`SENTINEL2_BANDS` order.

    The visible, red-edge, NIR and SWIR bands are :func:`~.mini_superres.render_bands`'
    (its class spectra, the RGB scaled to 0.3 reflectance); the three atmospheric bands
    follow their neighbours: B01 (coastal aerosol) a hazier blue, B09 (water vapour) an
    absorbed B08A, B10 (cirrus) near zero over a clear sky.

    Args:
        image: float [3, H, W] RGB in 0..255.
        mask: int [H, W] vocabulary ids.

    Returns:
        float32 [13, H, W] reflectance in 0..1.
    """
    rendered = render_bands(image, mask)
    reflectance = torch.cat([rendered[:3] * _VISIBLE_SCALE, rendered[3:] * _FULL_SCALE]) / 255
    by_name = dict(zip((_padded(b) for b in SENTINEL2_LOW_RES_BANDS), reflectance))
    by_name['B01'] = 0.04 + 0.9 * by_name['B02']
    by_name['B09'] = 0.35 * by_name['B08A']
    by_name['B10'] = 0.005 + 0.02 * by_name['B02']
    return torch.stack([by_name[name] for name in SENTINEL2_BANDS]).clamp(0, 1)


class EarthSynthMiniMultispectral(NonGeoDataset):
    """The mini corpus's scenes, masks and prompts as multispectral images in physical units.

    Each scene of :class:`EarthSynthMini` gives ``image`` float32 [C, H, W] in the units of
    :attr:`bands`: ``variant='sentinel2'`` all 13 Sentinel-2 bands as reflectance (0..1;
    vegetation bright in red edge and NIR, water dark beyond red, bare soil rising into
    SWIR: :func:`sentinel2_bands`), ``variant='rgbi'`` R, G, B, IR as 8-bit digital numbers
    (0..255, as ISPRS Potsdam's orthophotos). The other keys are the scene's (``mask``,
    ``prompt``, ``categories``, ``source``, ...).

    .. versionadded:: 0.5
    """

    variants: ClassVar[tuple[str, ...]] = get_args(Variant)

    def __init__(
        self,
        root: str | Path | None = None,
        split: Literal['train', 'val'] = 'train',
        variant: Variant = 'sentinel2',
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        seed: int = 0,
        size: int = 64,
        num_train: int = 256,
        num_val: int = 64,
        long_tail: bool = False,
    ) -> None:
        """Initialize a new EarthSynthMiniMultispectral instance, generating the corpus if needed.

        Args:
            root: parent folder of the cached mini corpus (default: the cache folder).
            split: one of ``train`` or ``val``.
            variant: ``sentinel2`` (13 bands, reflectance) or ``rgbi`` (4 bands, dn8).
            transforms: a function/transform applied to each sample dict.
            seed: random seed of the corpus.
            size: tile size in pixels.
            num_train: number of training scenes.
            num_val: number of validation scenes.
            long_tail: rare classes in few scenes (see :class:`EarthSynthMini`).

        Raises:
            ValueError: for an unknown ``variant``.
        """
        if variant not in self.variants:
            raise ValueError(f'variant must be one of {self.variants}, got {variant!r}')
        self.scenes = EarthSynthMini(
            root, split, 'full', None, seed, size, num_train, num_val, long_tail=long_tail
        )
        self.split, self.variant, self.transforms = split, variant, transforms

    @property
    def bands(self) -> SpectralBands:
        """The image's bands and their physical ranges."""
        return MULTISPECTRAL_BANDS[self.variant]

    def __len__(self) -> int:
        """Return the number of scenes."""
        return len(self.scenes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Return one scene.

        Args:
            index: index of the scene.

        Returns:
            The scene's sample dict, ``image`` float32 [C, H, W] in physical units.
        """
        sample = dict(self.scenes[index])
        rgb, mask = sample['image'].float(), sample['mask']
        if self.variant == 'sentinel2':
            sample['image'] = sentinel2_bands(rgb, mask)
        else:  # B08 of the same spectra; the camera's 255 is 0.5 reflectance, as the RGB's
            nir = sentinel2_bands(rgb, mask)[SENTINEL2_BANDS.index('B08')] * 255 / _FULL_SCALE
            sample['image'] = torch.cat([rgb, nir[None]]).clamp(0, 255)
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def plot(
        self, sample: dict[str, Any], show_titles: bool = True, suptitle: str | None = None
    ) -> Figure:
        """Plot a scene: its RGB composite (stretched), the mask (and a prediction).

        Args:
            sample: a sample as returned by :meth:`__getitem__` (``prediction`` optional).
            show_titles: title each panel.
            suptitle: figure title.

        Returns:
            The figure.
        """
        composite = rgb_composite(sample['image'][None], self.bands)[0]
        panels = [('RGB composite', composite), ('Mask', colorized(sample['mask']))]
        if 'prediction' in sample:
            panels.append(('Prediction', colorized(sample['prediction'])))
        return plot_panels(panels, show_titles, suptitle)


def rgb_composite(images: Tensor, bands: SpectralBands, physical: bool = True) -> Tensor:
    """The red, green and blue bands of images [B, C, H, W], stretched to 0..255 for display.

    Args:
        images: images in ``bands``' physical units (``physical``) or 0..255 per band.
        bands: their bands (must hold red, green and blue under any common name).
        physical: whether ``images`` are in physical units.

    Returns:
        float [B, 3, H, W] in 0..255, each image scaled so its 98th percentile is 255.
    """
    scaled = bands.from_physical(images) if physical else images
    rgb = scaled[:, list(bands.indices(('R', 'G', 'B')))].float()
    top = rgb.flatten(1).quantile(0.98, dim=1).clamp(min=1.0).view(-1, 1, 1, 1)
    return (rgb * 255 / top).clamp(0, 255)
