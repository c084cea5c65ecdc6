# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""EarthSynth LightningModules (TorchGeo tasks) and their callbacks."""

from .callbacks import AtomicCheckpointIO, DiffusersExport, output_dir, sample_grid
from .diffusion_task import DiffusionTask
from .earthsynth_controlnet import EarthSynthControlNet
from .synthesizer import BankWriter, SynthesizerModule

__all__ = (
    'AtomicCheckpointIO',
    'BankWriter',
    'DiffusersExport',
    'DiffusionTask',
    'EarthSynthControlNet',
    'SynthesizerModule',
    'output_dir',
    'sample_grid',
)
