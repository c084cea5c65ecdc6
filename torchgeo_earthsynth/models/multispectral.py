# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""A VAE over C spectral bands that records its bands, their physical ranges and units."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from diffusers import AutoencoderKL

# A pipeline folder's model_index.json names this module as the VAE's library; diffusers'
# from_pretrained looks up its loadable base classes (ModelMixin) in that module.
from diffusers import ModelMixin as ModelMixin
from diffusers.configuration_utils import register_to_config

from torchgeo_earthsynth.encodings.bands import SpectralBands, Units

__all__ = (
    'RGB_BANDS',
    'MultispectralAutoencoderKL',
    'config_bands',
    'is_multispectral_vae',
    'load_vae',
    'vae_bands',
)

#: The bands of an RGB generator: 8-bit red, green and blue.
RGB_BANDS: Final = SpectralBands(('R', 'G', 'B'), (0.0,) * 3, (255.0,) * 3, 'dn8')


class MultispectralAutoencoderKL(AutoencoderKL):  # type: ignore[misc]  # diffusers is untyped
    """diffusers' ``AutoencoderKL`` over ``len(band_names)`` bands, its bands in its config.

    The config (``vae/config.json``) records ``band_names``, ``band_minimum``,
    ``band_maximum`` and ``band_units`` beside AutoencoderKL's fields, so a saved generator
    says what its 0..255 per band mean (:attr:`bands`); ``in_channels`` and
    ``out_channels`` are the band count (recorded too: plain ``AutoencoderKL`` loads it).

    .. versionadded:: 0.5
    """

    @register_to_config  # type: ignore[untyped-decorator]
    def __init__(
        self,
        band_names: Sequence[str] = ('R', 'G', 'B'),
        band_minimum: Sequence[float] = (0.0, 0.0, 0.0),
        band_maximum: Sequence[float] = (255.0, 255.0, 255.0),
        band_units: Units = 'dn8',
        in_channels: int | None = None,
        out_channels: int | None = None,
        down_block_types: tuple[str, ...] = ('DownEncoderBlock2D',),
        up_block_types: tuple[str, ...] = ('UpDecoderBlock2D',),
        block_out_channels: tuple[int, ...] = (64,),
        layers_per_block: int = 1,
        act_fn: str = 'silu',
        latent_channels: int = 4,
        norm_num_groups: int = 32,
        sample_size: int = 32,
        scaling_factor: float = 0.18215,
        shift_factor: float | None = None,
        latents_mean: tuple[float, ...] | None = None,
        latents_std: tuple[float, ...] | None = None,
        force_upcast: bool = True,
        use_quant_conv: bool = True,
        use_post_quant_conv: bool = True,
        mid_block_add_attention: bool = True,
    ) -> None:
        """Initialize a new MultispectralAutoencoderKL instance.

        Args:
            band_names: the bands, in channel order.
            band_minimum: the physical value 0 stands for, per band.
            band_maximum: the physical value 255 stands for, per band.
            band_units: ``reflectance`` or ``dn8``.
            in_channels: None or the band count (as a saved config holds it).
            out_channels: None or the band count.
            down_block_types: as ``AutoencoderKL``'s (named here: diffusers rebuilds a
                model from the arguments its ``__init__`` names).
            up_block_types: as ``AutoencoderKL``'s.
            block_out_channels: as ``AutoencoderKL``'s.
            layers_per_block: as ``AutoencoderKL``'s.
            act_fn: as ``AutoencoderKL``'s.
            latent_channels: as ``AutoencoderKL``'s.
            norm_num_groups: as ``AutoencoderKL``'s.
            sample_size: as ``AutoencoderKL``'s.
            scaling_factor: as ``AutoencoderKL``'s.
            shift_factor: as ``AutoencoderKL``'s.
            latents_mean: as ``AutoencoderKL``'s.
            latents_std: as ``AutoencoderKL``'s.
            force_upcast: as ``AutoencoderKL``'s.
            use_quant_conv: as ``AutoencoderKL``'s.
            use_post_quant_conv: as ``AutoencoderKL``'s.
            mid_block_add_attention: as ``AutoencoderKL``'s.

        Raises:
            ValueError: if the ranges do not fit the names, or ``in_channels`` /
                ``out_channels`` is not the band count.
        """
        bands = SpectralBands(
            tuple(band_names), tuple(band_minimum), tuple(band_maximum), band_units
        )
        for name, value in (('in_channels', in_channels), ('out_channels', out_channels)):
            if value is not None and value != len(bands):
                raise ValueError(
                    f'{name}: {value} does not match the {len(bands)} bands {list(band_names)}'
                )
        super().__init__(
            in_channels=len(bands),
            out_channels=len(bands),
            down_block_types=tuple(down_block_types),
            up_block_types=tuple(up_block_types),
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            act_fn=act_fn,
            latent_channels=latent_channels,
            norm_num_groups=norm_num_groups,
            sample_size=sample_size,
            scaling_factor=scaling_factor,
            shift_factor=shift_factor,
            latents_mean=latents_mean,
            latents_std=latents_std,
            force_upcast=force_upcast,
            use_quant_conv=use_quant_conv,
            use_post_quant_conv=use_post_quant_conv,
            mid_block_add_attention=mid_block_add_attention,
        )
        # the band count, not None, in the saved config (plain AutoencoderKL reads it)
        self.register_to_config(in_channels=len(bands), out_channels=len(bands))

    @property
    def bands(self) -> SpectralBands:
        """The bands this VAE encodes and what 0..255 per band mean."""
        return config_bands(self.config)


def config_bands(config: Any) -> SpectralBands:
    """The bands a VAE config (``vae/config.json``'s fields) records."""
    return SpectralBands(
        tuple(str(v) for v in config['band_names']),
        tuple(float(v) for v in config['band_minimum']),
        tuple(float(v) for v in config['band_maximum']),
        config['band_units'],
    )


def is_multispectral_vae(vae: Any) -> bool:
    """Whether ``vae`` records its bands (a :class:`MultispectralAutoencoderKL` or its config)."""
    config = getattr(vae, 'config', None)
    return isinstance(vae, MultispectralAutoencoderKL) or (
        config is not None and 'band_names' in config
    )


def vae_bands(vae: Any) -> SpectralBands:
    """The bands a pipeline's VAE generates: its recorded ones, else 8-bit RGB."""
    config = getattr(vae, 'config', {})
    return config_bands(config) if 'band_names' in config else RGB_BANDS


def load_vae(base: str | Path, subfolder: str | None = 'vae', **kwargs: Any) -> AutoencoderKL:
    """A saved VAE, as :class:`MultispectralAutoencoderKL` when its config records bands.

    Args:
        base: hub id or folder.
        subfolder: the VAE's subfolder.
        **kwargs: passed to ``from_pretrained`` (``torch_dtype``, ``revision``).

    Returns:
        The VAE.
    """
    config_file = Path(base) / (subfolder or '') / 'config.json'
    if config_file.is_file() and '"band_names"' in config_file.read_text():
        model: AutoencoderKL = MultispectralAutoencoderKL.from_pretrained(
            base, subfolder=subfolder, **kwargs
        )
        return model
    vae: AutoencoderKL = AutoencoderKL.from_pretrained(base, subfolder=subfolder, **kwargs)
    return vae
