# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""torchgeo_earthsynth.datamodules: LightningDataModules for EarthSynth corpora."""

from .downstream import MiniClassificationDataModule, MiniSegmentationDataModule
from .earthsynth180k import (
    EarthSynth180KDataModule,
    EarthSynthMiniDataModule,
    RefreshLabels,
    balanced_weights,
    sample_class_ids,
)
from .mask_prompt import MaskPromptDataModule, MaskPromptDataset
from .superres import EarthSynthMiniSRDataModule

__all__ = (
    'EarthSynth180KDataModule',
    'EarthSynthMiniDataModule',
    'EarthSynthMiniSRDataModule',
    'MaskPromptDataModule',
    'MaskPromptDataset',
    'MiniClassificationDataModule',
    'MiniSegmentationDataModule',
    'RefreshLabels',
    'balanced_weights',
    'sample_class_ids',
)
