# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Batch-level transforms (nn.Modules applied on the device) and callbacks."""

from torchgeo_earthsynth.origins import SampleOrigin
from torchgeo_earthsynth.transforms.cf_comp import (
    PASTE,
    REAL,
    TILE,
    CompositionPlan,
    CounterfactualComposition,
)
from torchgeo_earthsynth.transforms.synthetic_augmentation import (
    BankLike,
    SynthesizerLoader,
    SyntheticAugmentation,
    SyntheticPlan,
    rasterize_boxes,
)
from torchgeo_earthsynth.transforms.synthetic_callback import SyntheticAugmentationCallback, attach

__all__ = (
    'PASTE',
    'REAL',
    'TILE',
    'BankLike',
    'CompositionPlan',
    'CounterfactualComposition',
    'SampleOrigin',
    'SynthesizerLoader',
    'SyntheticAugmentation',
    'SyntheticAugmentationCallback',
    'SyntheticPlan',
    'attach',
    'rasterize_boxes',
)
