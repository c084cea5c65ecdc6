# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""EarthSynth-style generative data augmentation for TorchGeo, Lightning and diffusers."""

__version__ = '0.1.0'
