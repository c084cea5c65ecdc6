# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""TorchGeo datasets for EarthSynth-180K and the bundled mini corpus."""

from .earthsynth180k import EarthSynth180K, EarthSynthNotFoundError, Record
from .mini import EarthSynthMini, make_mini_corpus
from .mini_superres import EarthSynthMiniSR, render_bands

__all__ = (
    'EarthSynth180K',
    'EarthSynthMini',
    'EarthSynthMiniSR',
    'EarthSynthNotFoundError',
    'Record',
    'make_mini_corpus',
    'render_bands',
)
