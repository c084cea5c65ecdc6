# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""EarthSynthMiniSR: the mini corpus as super-resolution pairs (10 bands low-res, RGB high-res)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

import torch
from matplotlib.figure import Figure
from torch import Tensor

from torchgeo_earthsynth.compat import NonGeoDataset
from torchgeo_earthsynth.datasets.mini import EarthSynthMini
from torchgeo_earthsynth.datasets.plotting import plot_panels
from torchgeo_earthsynth.degradation import degrade
from torchgeo_earthsynth.models import SENTINEL2_LOW_RES_BANDS
from torchgeo_earthsynth.vocabulary import CLASS_IDS

__all__ = ('EarthSynthMiniSR', 'render_bands')

C = CLASS_IDS
_VEGETATION: Final = (0.12, 0.30, 0.38, 0.42, 0.43, 0.22, 0.11)
_URBAN: Final = (0.18, 0.19, 0.20, 0.21, 0.22, 0.25, 0.22)
#: Reflectance of each mini class in B5, B6, B7, B8, B8A, B11, B12 (red edge, NIR, SWIR):
#: typical spectra (vegetation's red-edge rise and NIR plateau, water dark beyond red, bare
#: soil rising into SWIR); classes not listed reflect as built-up surfaces.
_REFLECTANCE: Final[dict[int, tuple[float, ...]]] = {
    C['grass']: _VEGETATION,
    C['tree']: _VEGETATION,
    C['forest land']: (0.08, 0.25, 0.33, 0.37, 0.38, 0.17, 0.08),
    C['agriculture land']: (0.15, 0.28, 0.33, 0.36, 0.37, 0.27, 0.16),
    C['water']: (0.03, 0.02, 0.02, 0.02, 0.015, 0.01, 0.005),
    C['bare land']: (0.25, 0.27, 0.28, 0.30, 0.31, 0.38, 0.33),
    C['background']: (0.2, 0.22, 0.23, 0.24, 0.25, 0.3, 0.26),
    C['small vehicle']: (0.35,) * 7,
    C['storage tank']: (0.33,) * 7,
}
#: Reflectance that maps to 255 (the mini corpus keeps every band on the 0..255 scale).
_FULL_SCALE: Final = 0.5


def render_bands(image: Tensor, mask: Tensor) -> Tensor:
    """A scene's 10 Sentinel-2-like bands: its RGB plus 7 bands derived from its classes.

    Band order :data:`~torchgeo_earthsynth.models.SENTINEL2_LOW_RES_BANDS` (B4, B3, B2, B5,
    B6, B7, B8, B8A, B11, B12). Each extra band is the class's typical reflectance
    (:data:`_REFLECTANCE`, 0.5 maps to 255) times the scene's own texture (its luma
    relative to the class's mean luma, weight 0.3), so NIR separates vegetation from water
    and SWIR bare land from grass, with the RGB's detail.

    Args:
        image: float [3, H, W] RGB in 0..255.
        mask: int [H, W] vocabulary ids.

    Returns:
        float32 [10, H, W] in 0..255.
    """
    luma = image.float().mean(0)
    extra = torch.empty(len(_VEGETATION), *mask.shape)
    for cls in torch.unique(mask).tolist():
        where = mask == cls
        spectrum = torch.tensor(_REFLECTANCE.get(int(cls), _URBAN)) * 255 / _FULL_SCALE
        texture = luma[where] / luma[where].mean().clamp(min=1)
        extra[:, where] = spectrum[:, None] * (0.7 + 0.3 * texture)
    return torch.cat([image.float(), extra.clamp(0, 255)])


class EarthSynthMiniSR(NonGeoDataset):
    """Super-resolution pairs from the mini corpus: a degraded low-res stack and the RGB scene.

    Each scene of :class:`EarthSynthMini` gives ``image`` (float32 [3, H, W], 0..255, the
    high-res target) and ``low_res`` (float32 [C, H / scale, W / scale], 0..255): its 10
    Sentinel-2-like bands (:func:`render_bands`; ``bands='rgb'`` keeps the 3 RGB bands)
    degraded by :func:`~torchgeo_earthsynth.degradation.degrade` (Gaussian blur sigma
    ``scale / 2``, decimation by ``scale``, Gaussian noise ``noise_std``, seeded per scene so
    a sample is the same on every read). Also ``mask``, ``prompt`` and ``metadata`` of the
    scene.

    .. versionadded:: 0.3
    """

    band_names: ClassVar[tuple[str, ...]] = SENTINEL2_LOW_RES_BANDS

    def __init__(
        self,
        root: str | Path | None = None,
        split: Literal['train', 'val'] = 'train',
        bands: Literal['sentinel2', 'rgb'] = 'sentinel2',
        scale: int = 2,
        noise_std: float = 2.0,
        blur_sigma: float | None = None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        seed: int = 0,
        size: int = 64,
        num_train: int = 256,
        num_val: int = 64,
    ) -> None:
        """Initialize a new EarthSynthMiniSR instance, generating the corpus if needed.

        Args:
            root: parent folder of the cached mini corpus (default: the cache folder).
            split: one of ``train`` or ``val``.
            bands: ``sentinel2`` (10 bands) or ``rgb`` (3) in ``low_res``.
            scale: super-resolution factor (divides ``size``).
            noise_std: noise added to the low-res stack (0..255 scale).
            blur_sigma: blur before decimation (None: ``scale / 2``).
            transforms: a function/transform applied to each sample dict.
            seed: random seed of the corpus (and of the noise).
            size: high-res tile size in pixels.
            num_train: number of training scenes.
            num_val: number of validation scenes.

        Raises:
            ValueError: if ``scale`` does not divide ``size`` or ``bands`` is unknown.
        """
        if scale < 1 or size % scale:
            raise ValueError(f'scale must be >= 1 and divide size {size}, got {scale}')
        if bands not in ('sentinel2', 'rgb'):
            raise ValueError(f"bands must be 'sentinel2' or 'rgb', got {bands!r}")
        self.scenes = EarthSynthMini(root, split, 'full', None, seed, size, num_train, num_val)
        self.split, self.bands, self.scale = split, bands, scale
        self.noise_std, self.blur_sigma, self.seed = noise_std, blur_sigma, seed
        self.transforms = transforms

    @property
    def num_bands(self) -> int:
        """Bands of ``low_res``."""
        return len(self.band_names) if self.bands == 'sentinel2' else 3

    def __len__(self) -> int:
        """Return the number of scenes."""
        return len(self.scenes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Return one pair.

        Args:
            index: index of the scene.

        Returns:
            ``image``, ``low_res``, ``mask``, ``prompt``, ``metadata``.
        """
        scene = self.scenes[index]
        image = scene['image'].float()
        stack = render_bands(image, scene['mask']) if self.bands == 'sentinel2' else image
        split_index = ('train', 'val').index(self.split)
        generator = torch.Generator().manual_seed(
            (self.seed * 1_000_003 + split_index) * 1_000_003 + index
        )
        low_res = degrade(stack[None], self.scale, self.blur_sigma, self.noise_std, generator)[0]
        sample = {
            'image': image,
            'low_res': low_res,
            'mask': scene['mask'],
            'prompt': scene['prompt'],
            'metadata': scene['metadata'],
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def plot(
        self, sample: dict[str, Any], show_titles: bool = True, suptitle: str | None = None
    ) -> Figure:
        """Plot a pair: low-res RGB, low-res false colour (NIR, red, green), high-res RGB.

        Args:
            sample: a sample as returned by :meth:`__getitem__` (``prediction`` optional).
            show_titles: title each panel.
            suptitle: figure title.

        Returns:
            The figure.
        """
        low = sample['low_res']
        panels = [('low-res RGB', low[:3])]
        if low.shape[0] >= 7:  # B8 (NIR), B4, B3
            panels.append(('low-res NIR false colour', low[[6, 0, 1]]))
        panels.append(('high-res RGB', sample['image']))
        if 'prediction' in sample:
            panels.append(('prediction', sample['prediction']))
        return plot_panels(panels, show_titles, suptitle)
