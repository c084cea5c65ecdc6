# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""EarthSynth LightningModules (TorchGeo tasks) and their callbacks."""

from .earthsynth_controlnet import (
    AtomicCheckpointIO,
    DiffusersExport,
    EarthSynthControlNet,
    sample_grid,
)

__all__ = ('AtomicCheckpointIO', 'DiffusersExport', 'EarthSynthControlNet', 'sample_grid')
