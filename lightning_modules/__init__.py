# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""LightningModules of the generator families (TorchGeo tasks) and their callbacks."""

from torchgeo_earthsynth.lightning_modules.callbacks import AtomicCheckpointIO, DiffusersExport
from torchgeo_earthsynth.lightning_modules.diffusion_task import DiffusionTask
from torchgeo_earthsynth.lightning_modules.diffusionsat_task import DiffusionSatTask
from torchgeo_earthsynth.lightning_modules.earthsynth_controlnet import EarthSynthControlNet
from torchgeo_earthsynth.lightning_modules.figures import output_dir, sample_grid
from torchgeo_earthsynth.lightning_modules.global_content import GlobalContentControlNet
from torchgeo_earthsynth.lightning_modules.metadata_controlnet import MetadataControlNet
from torchgeo_earthsynth.lightning_modules.multicontrol_task import MultiControlNetTask
from torchgeo_earthsynth.lightning_modules.superres_task import SuperResolutionTask
from torchgeo_earthsynth.lightning_modules.synthesizer import BankWriter, SynthesizerModule

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
    'SuperResolutionTask',
    'SynthesizerModule',
    'output_dir',
    'sample_grid',
)
