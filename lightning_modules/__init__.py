# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""EarthSynth LightningModules (TorchGeo tasks) and their callbacks."""

from .earthsynth_controlnet import (
    AtomicCheckpointIO,
    DiffusersExport,
    EarthSynthControlNet,
    sample_grid,
)
from .synthesizer import BankWriter, SynthesizerModule

__all__ = (
    'AtomicCheckpointIO',
    'BankWriter',
    'DiffusersExport',
    'EarthSynthControlNet',
    'SynthesizerModule',
    'sample_grid',
)
