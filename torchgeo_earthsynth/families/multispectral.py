# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Multispectral generators: a VAE over C bands; the output is every band in 0..255."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from torchgeo_earthsynth.families.base import BatchCall, GeneratorFamily, register
from torchgeo_earthsynth.models import is_multispectral_vae, vae_bands


@register
class MultispectralFamily(GeneratorFamily):
    """A generator whose VAE records its bands (a ``MultispectralAutoencoderKL``).

    It adds no condition (the mask ControlNet family supplies the mask): it makes the output
    the VAE's bands, float [B, C, H, W] in 0..255 per band, whose physical meaning is
    ``Synthesizer.bands`` (:func:`~torchgeo_earthsynth.models.vae_bands`).
    """

    @staticmethod
    def recognises(pipeline: Any) -> bool:
        """A pipeline whose VAE records its bands (any count)."""
        return is_multispectral_vae(getattr(pipeline, 'vae', None))

    def finish(self, call: BatchCall, images: Tensor) -> Tensor:
        """Every band clamped to 0..255 (the VAE may overshoot its decoder's range).

        Raises:
            ValueError: if the images do not hold the VAE's band count.
        """
        bands = vae_bands(self.pipeline.vae)
        if images.dim() != 4 or images.shape[1] != len(bands):
            raise ValueError(
                f'generated images {list(images.shape)}: expected [B, {len(bands)}, H, W] '
                f'for the VAE bands {list(bands.names)}'
            )
        return images.clamp(0, 255)


__all__ = ('MultispectralFamily',)
