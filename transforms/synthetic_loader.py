# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""A synthesizer a config can name: built lazily, on the first batch that needs it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torchgeo_earthsynth.datasets import MULTISPECTRAL_BANDS
from torchgeo_earthsynth.encodings.bands import SpectralBands
from torchgeo_earthsynth.models import RGB_BANDS, SD15_ID, config_bands
from torchgeo_earthsynth.synthesis.parts import Family, SchedulerName
from torchgeo_earthsynth.synthesis.synthesizer import Synthesizer

__all__ = ('SynthesizerLoader',)


class SynthesizerLoader:
    """A YAML-friendly, lazily built :class:`~torchgeo_earthsynth.synthesis.Synthesizer`.

    Configs cannot build a diffusers pipeline inline; this holds the arguments and builds the
    synthesizer on first use (on the first training batch), so parsing a config loads nothing
    and a datamodule holding it pickles cheaply (DDP spawn, DataLoader workers).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        pretrained: str | Path | None = None,
        base: str | Path = SD15_ID,
        subfolder: str | None = None,
        tiny: bool = False,
        shipped: bool = False,
        family: Family = 'earthsynth',
        seed: int = 0,
        image_size: int = 64,
        scheduler: SchedulerName = 'unipc',
        num_inference_steps: int = 20,
        guidance_scale: float | None = None,
        batch_size: int = 8,
    ) -> None:
        """Initialize a new SynthesizerLoader instance.

        Args:
            pretrained: our pipeline export, a ControlNet folder, or a hub id (e.g.
                ``jaychempan/EarthSynth``); see
                :meth:`~torchgeo_earthsynth.synthesis.Synthesizer.from_pretrained`.
            base: the Stable Diffusion base of a bare ControlNet.
            subfolder: the ControlNet's subfolder, if any.
            tiny: build an untrained tiny synthesizer instead (tests, demos).
            shipped: load the package's own trained tiny EarthSynth generator (32 px, the
                mini corpus's; :func:`~torchgeo_earthsynth.models.shipped_generator`).
            family: the tiny synthesizer's family (``Synthesizer.tiny``'s).
            seed: initialisation seed of the tiny synthesizer.
            image_size: image size of the tiny synthesizer.
            scheduler: sampler used for inference.
            num_inference_steps: denoising steps.
            guidance_scale: classifier-free guidance scale (None: the synthesizer's default).
            batch_size: samples per forward pass.

        Raises:
            ValueError: unless exactly one of ``pretrained``, ``tiny`` and ``shipped`` is given.
        """
        if (pretrained is not None) + tiny + shipped != 1:
            raise ValueError(
                'give exactly one of pretrained=<path or hub id>, tiny=True and shipped=True, '
                f'got pretrained={pretrained!r}, tiny={tiny}, shipped={shipped}'
            )
        self.pretrained = pretrained
        self.base = base
        self.subfolder = subfolder
        self.tiny, self.shipped, self.family = tiny, shipped, family
        self.seed = seed
        self.image_size = image_size
        self.scheduler: SchedulerName = scheduler
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.batch_size = batch_size
        self._synthesizer: Synthesizer | None = None

    def get(self) -> Synthesizer:
        """The synthesizer, built on the first call.

        Returns:
            The :class:`~torchgeo_earthsynth.synthesis.Synthesizer`.
        """
        if self._synthesizer is None:
            kwargs: dict[str, Any] = {
                'scheduler': self.scheduler,
                'batch_size': self.batch_size,
                'num_inference_steps': self.num_inference_steps,
            }
            if self.guidance_scale is not None:
                kwargs['guidance_scale'] = self.guidance_scale
            if self.tiny:
                self._synthesizer = Synthesizer.tiny(
                    self.seed, self.image_size, self.family, **kwargs
                )
            elif self.shipped:
                from torchgeo_earthsynth.models.shipped import shipped_generator

                self._synthesizer = Synthesizer.from_pretrained(shipped_generator(), **kwargs)
            else:
                assert self.pretrained is not None
                self._synthesizer = Synthesizer.from_pretrained(
                    self.pretrained, self.base, self.subfolder, **kwargs
                )
        return self._synthesizer

    @property
    def bands(self) -> SpectralBands:
        """The bands the synthesizer writes, known without building it (attach checks them).

        A tiny multispectral synthesizer's 13 Sentinel-2 bands, a local export's (its
        ``vae/config.json``), else 8-bit RGB (the released checkpoints are RGB).
        """
        if self._synthesizer is not None:
            return self._synthesizer.bands
        if self.tiny:
            return MULTISPECTRAL_BANDS['sentinel2'] if self.family == 'multispectral' else RGB_BANDS
        config = Path(str(self.pretrained)) / 'vae' / 'config.json'
        if not self.shipped and config.is_file():
            fields = json.loads(config.read_text())
            return config_bands(fields) if 'band_names' in fields else RGB_BANDS
        return RGB_BANDS

    def __repr__(self) -> str:
        """Where the synthesizer comes from."""
        what = f'pretrained={str(self.pretrained)!r}'
        what = 'tiny=True' if self.tiny else 'shipped=True' if self.shipped else what
        return f'{type(self).__name__}({what}, num_inference_steps={self.num_inference_steps})'
