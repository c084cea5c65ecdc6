# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""torchgeo_earthsynth.datamodules: LightningDataModules for EarthSynth corpora."""

from torchgeo_earthsynth.datamodules.box_layouts import BoxLayoutDataModule, BoxLayoutDataset
from torchgeo_earthsynth.datamodules.detection import SyntheticVHR10DataModule
from torchgeo_earthsynth.datamodules.downstream import (
    MiniClassificationDataModule,
    MiniSegmentationDataModule,
)
from torchgeo_earthsynth.datamodules.earthsynth180k import (
    EarthSynth180KDataModule,
    RefreshLabels,
    balanced_weights,
    sample_class_ids,
)
from torchgeo_earthsynth.datamodules.mask_prompt import MaskPromptDataModule, MaskPromptDataset
from torchgeo_earthsynth.datamodules.mini import EarthSynthMiniDataModule
from torchgeo_earthsynth.datamodules.superres import EarthSynthMiniSRDataModule

__all__ = (
    'BoxLayoutDataModule',
    'BoxLayoutDataset',
    'EarthSynth180KDataModule',
    'EarthSynthMiniDataModule',
    'EarthSynthMiniSRDataModule',
    'MaskPromptDataModule',
    'MaskPromptDataset',
    'MiniClassificationDataModule',
    'MiniSegmentationDataModule',
    'RefreshLabels',
    'SyntheticVHR10DataModule',
    'balanced_weights',
    'sample_class_ids',
)
