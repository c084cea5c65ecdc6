# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""A mask ControlNet generating C spectral bands: physical units in, 0..255 per band out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from matplotlib.figure import Figure
from torch import Tensor

from torchgeo_earthsynth.datasets import MULTISPECTRAL_BANDS, rgb_composite
from torchgeo_earthsynth.encodings.bands import SpectralBands, Units
from torchgeo_earthsynth.models import (
    DiffusionParts,
    is_multispectral_vae,
    tiny_multispectral_vae,
    vae_bands,
)

from .earthsynth_controlnet import EarthSynthControlNet
from .figures import sample_grid

__all__ = ('MultispectralControlNet', 'resolve_bands')


def resolve_bands(
    variant: str | None,
    band_names: Sequence[str] | None = None,
    band_minimum: Sequence[float] | None = None,
    band_maximum: Sequence[float] | None = None,
    band_units: Units = 'reflectance',
) -> SpectralBands:
    """The bands a variant names, or the ones given field by field.

    Raises:
        ValueError: for an unknown variant, or neither a variant nor all of names, minima
            and maxima (or both).
    """
    fields = (band_names, band_minimum, band_maximum)
    if variant is not None:
        if any(field is not None for field in fields):
            raise ValueError('give either variant or band_names/band_minimum/band_maximum')
        if variant not in MULTISPECTRAL_BANDS:
            raise ValueError(
                f'variant must be one of {sorted(MULTISPECTRAL_BANDS)}, got {variant!r}'
            )
        return MULTISPECTRAL_BANDS[variant]
    if band_names is None or band_minimum is None or band_maximum is None:
        raise ValueError(
            'without a variant, give band_names, band_minimum and band_maximum (one per band)'
        )
    return SpectralBands(tuple(band_names), tuple(band_minimum), tuple(band_maximum), band_units)


class MultispectralControlNet(EarthSynthControlNet):
    """:class:`EarthSynthControlNet` over a VAE of C spectral bands (mask + prompt -> C bands).

    Batches carry ``image`` [B, C, H, W] in the bands' physical units (reflectance, 8-bit
    digital numbers; :class:`~torchgeo_earthsynth.datamodules.
    EarthSynthMiniMultispectralDataModule`); the training and validation steps map them to
    0..255 per band with :attr:`bands` (``from_physical``), the scale the diffusion task and
    the generated images share. The tiny preset builds a
    :class:`~torchgeo_earthsynth.models.MultispectralAutoencoderKL` for the bands; the
    ``pretrained`` preset needs a ``base_model`` whose VAE records the same bands. The export
    loads with ``Synthesizer.from_pretrained``, which generates [B, C, H, W] in 0..255 and
    says what they mean (``Synthesizer.bands``).

    .. versionadded:: 0.5
    """

    def __init__(
        self,
        variant: Literal['sentinel2', 'rgbi'] | None = 'sentinel2',
        band_names: list[str] | None = None,
        band_minimum: list[float] | None = None,
        band_maximum: list[float] | None = None,
        band_units: Units = 'reflectance',
        **kwargs: Any,
    ) -> None:
        """Initialize a new MultispectralControlNet instance.

        Args:
            variant: the bands of :class:`~torchgeo_earthsynth.datasets.
                EarthSynthMiniMultispectral` (``sentinel2``: 13 bands, reflectance 0..1;
                ``rgbi``: R, G, B, IR, dn8 0..255); None to give the bands below.
            band_names: the bands in channel order (``variant=None``).
            band_minimum: the physical value 0 stands for, per band.
            band_maximum: the physical value 255 stands for, per band.
            band_units: ``reflectance`` or ``dn8``.
            **kwargs: :class:`EarthSynthControlNet`'s arguments.

        Raises:
            ValueError: if the bands are not given by exactly one of ``variant`` or the
                band fields.
        """
        resolve_bands(variant, band_names, band_minimum, band_maximum, band_units)
        super().__init__(**kwargs)

    @property
    def bands(self) -> SpectralBands:
        """The bands generated and trained on, and their physical ranges."""
        hp = self.hparams
        return resolve_bands(
            hp['variant'],
            hp['band_names'],
            hp['band_minimum'],
            hp['band_maximum'],
            hp['band_units'],
        )

    def build_parts(self) -> DiffusionParts:
        """:meth:`EarthSynthControlNet.build_parts` with a VAE of :attr:`bands`.

        Raises:
            ValueError: if a pretrained base's VAE does not record these bands.
        """
        parts = super().build_parts()
        hp, bands = self.hparams, self.bands
        if hp['preset'] == 'tiny':
            parts.vae = tiny_multispectral_vae(
                bands,
                hp['seed'] + 1,
                hp['image_size'],
                self.tiny_vae_downscale,
                *self.tiny_vae_size,
            )
        elif not is_multispectral_vae(parts.vae) or vae_bands(parts.vae) != bands:
            raise ValueError(
                f'{hp["base_model"]}: its VAE generates {list(vae_bands(parts.vae).names)}, '
                f'expected a MultispectralAutoencoderKL of {list(bands.names)}'
            )
        return parts

    def scaled(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch with ``image`` in physical units -> 0..255 per band (clamped).

        Called by the training and validation steps (not ``on_after_batch_transfer``:
        Lightning skips the module's hook when a TorchGeo datamodule defines its own).

        Raises:
            ValueError: if the images do not hold :attr:`bands`' count.
        """
        if 'image' not in batch:
            return batch
        bands, image = self.bands, batch['image']
        if image.dim() != 4 or image.shape[1] != len(bands):
            raise ValueError(
                f"batch['image'] {list(image.shape)}: expected [B, {len(bands)}, H, W] in the "
                f'physical units of {list(bands.names)}'
            )
        return {**batch, 'image': bands.from_physical(image.float()).clamp(0, 255)}

    def training_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> Tensor:
        """:meth:`EarthSynthControlNet.training_step` on the batch :meth:`scaled`."""
        return super().training_step(self.scaled(batch), batch_idx, dataloader_idx)

    def validation_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """:meth:`EarthSynthControlNet.validation_step` on the batch :meth:`scaled`."""
        super().validation_step(self.scaled(batch), batch_idx, dataloader_idx)

    def sample_figure(self, batch: dict[str, Any], count: int) -> Figure:
        """Condition | generated | real rows, the images as RGB composites."""
        synth = self.synthesizer(
            self.hparams['val_inference_steps'], self.hparams['val_guidance_scale']
        )
        generated = self.generate_rows(synth, batch, count, range(count))
        bands = self.bands
        return sample_grid(
            batch['mask'][:count],
            rgb_composite(generated, bands, physical=False),
            rgb_composite(batch['image'][:count], bands, physical=False),
            list(batch['prompt'][:count]),
            title=f'step {self.global_step} (RGB composite)',
        )

    def export_metadata(self) -> dict[str, Any]:
        """EarthSynthControlNet's fields, the task and the bands."""
        bands = self.bands
        return {
            **super().export_metadata(),
            'task': 'multispectral',
            'bands': {
                'names': list(bands.names),
                'minimum': list(bands.minimum),
                'maximum': list(bands.maximum),
                'units': bands.units,
            },
        }
