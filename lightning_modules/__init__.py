# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""LightningModules of the generator families (TorchGeo tasks) and their callbacks."""

from .callbacks import AtomicCheckpointIO, DiffusersExport
from .diffusion_task import DiffusionTask
from .diffusionsat_task import DiffusionSatTask
from .earthsynth_controlnet import EarthSynthControlNet
from .figures import output_dir, sample_grid
from .global_content import GlobalContentControlNet
from .metadata_controlnet import MetadataControlNet
from .multicontrol_task import MultiControlNetTask
from .multispectral_task import MultispectralControlNet
from .superres_task import SuperResolutionTask
from .synthesizer import BankWriter, SynthesizerModule
from .temporal_task import TemporalControlNetTask

__all__ = (
    'AtomicCheckpointIO',
    'BankWriter',
    'DiffusersExport',
    'DiffusionSatTask',
    'DiffusionTask',
    'EarthSynthControlNet',
    'GlobalContentControlNet',
    'MetadataControlNet',
    'MultiControlNetTask',
    'MultispectralControlNet',
    'SuperResolutionTask',
    'SynthesizerModule',
    'TemporalControlNetTask',
    'output_dir',
    'sample_grid',
)
