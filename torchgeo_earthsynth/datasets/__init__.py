# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""TorchGeo datasets for EarthSynth-180K and the bundled mini corpus."""

from torchgeo_earthsynth.datasets.earthsynth180k import (
    EarthSynth180K,
    EarthSynthNotFoundError,
    Record,
)
from torchgeo_earthsynth.datasets.mini import EarthSynthMini, make_mini_corpus
from torchgeo_earthsynth.datasets.mini_multispectral import (
    MULTISPECTRAL_BANDS,
    EarthSynthMiniMultispectral,
    rgb_composite,
    sentinel2_bands,
)
from torchgeo_earthsynth.datasets.mini_superres import EarthSynthMiniSR, render_bands
from torchgeo_earthsynth.datasets.mini_temporal import EarthSynthMiniTemporal, add_buildings

__all__ = (
    'MULTISPECTRAL_BANDS',
    'EarthSynth180K',
    'EarthSynthMini',
    'EarthSynthMiniMultispectral',
    'EarthSynthMiniSR',
    'EarthSynthMiniTemporal',
    'EarthSynthNotFoundError',
    'Record',
    'add_buildings',
    'make_mini_corpus',
    'render_bands',
    'rgb_composite',
    'sentinel2_bands',
)
