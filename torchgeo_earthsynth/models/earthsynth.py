# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The EarthSynth family: its released ControlNet (class mask + prompt on SD 1.5)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from diffusers import ControlNetModel

from torchgeo_earthsynth.models.diffusionsat_controlnet import load_diffusionsat_controlnet

#: The released EarthSynth ControlNet (DESIGN.md).
EARTHSYNTH_ID: Final = 'jaychempan/EarthSynth'
EARTHSYNTH_SUBFOLDER: Final = 'controlnet'

__all__ = ('EARTHSYNTH_ID', 'EARTHSYNTH_SUBFOLDER', 'load_controlnet')


def load_controlnet(source: str | Path, subfolder: str | None = None) -> ControlNetModel:
    """A ControlNet from a hub id (e.g. ``jaychempan/EarthSynth``) or a local export.

    Args:
        source: hub id or folder in diffusers format.
        subfolder: e.g. ``controlnet`` for the released EarthSynth weights.

    Returns:
        The ControlNet (a :class:`~torchgeo_earthsynth.models.DiffusionSatControlNet` where
        its config has DiffusionSat's ``use_metadata``).

    Raises:
        ValueError: if the folder is not a diffusers ControlNet.
    """
    path = Path(source) / (subfolder or '')
    if Path(source).exists() and not (path / 'config.json').exists():
        raise ValueError(
            f'{path}: no config.json; expected a diffusers ControlNet export '
            '(save_pretrained folder)'
        )
    config = path / 'config.json'
    if config.is_file() and 'use_metadata' in json.loads(config.read_text()):
        return load_diffusionsat_controlnet(source, subfolder)  # a mask ControlNet + metadata
    kwargs = {'subfolder': subfolder} if subfolder else {}
    return ControlNetModel.from_pretrained(str(source), **kwargs)
