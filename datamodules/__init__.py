# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""torchgeo_earthsynth.datamodules: LightningDataModules for EarthSynth corpora."""

from .box_layouts import BoxLayoutDataModule, BoxLayoutDataset
from .change import MiniChangeDetectionDataModule
from .detection import SyntheticVHR10DataModule
from .downstream import (
    MiniClassificationDataModule,
    MiniSegmentationDataModule,
)
from .earthsynth180k import (
    EarthSynth180KDataModule,
    RefreshLabels,
    balanced_weights,
    sample_class_ids,
)
from .eurosat_mini import MiniEuroSATDataModule
from .mask_prompt import MaskPromptDataModule, MaskPromptDataset
from .mini import EarthSynthMiniDataModule
from .multispectral import EarthSynthMiniMultispectralDataModule
from .superres import EarthSynthMiniSRDataModule
from .temporal import EarthSynthMiniTemporalDataModule

__all__ = (
    'BoxLayoutDataModule',
    'BoxLayoutDataset',
    'EarthSynth180KDataModule',
    'EarthSynthMiniDataModule',
    'EarthSynthMiniMultispectralDataModule',
    'EarthSynthMiniSRDataModule',
    'EarthSynthMiniTemporalDataModule',
    'MaskPromptDataModule',
    'MaskPromptDataset',
    'MiniChangeDetectionDataModule',
    'MiniClassificationDataModule',
    'MiniEuroSATDataModule',
    'MiniSegmentationDataModule',
    'RefreshLabels',
    'SyntheticVHR10DataModule',
    'balanced_weights',
    'sample_class_ids',
)
