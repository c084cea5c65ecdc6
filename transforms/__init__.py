# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Batch-level transforms (nn.Modules applied on the device) and callbacks."""

from .cf_comp import PASTE, REAL, TILE, CompositionPlan, CounterfactualComposition
from .synthetic_augmentation import (
    BankLike,
    SynthesizerLoader,
    SyntheticAugmentation,
    SyntheticAugmentationCallback,
    SyntheticPlan,
    attach,
    rasterize_boxes,
)

__all__ = (
    'PASTE',
    'REAL',
    'TILE',
    'BankLike',
    'CompositionPlan',
    'CounterfactualComposition',
    'SynthesizerLoader',
    'SyntheticAugmentation',
    'SyntheticAugmentationCallback',
    'SyntheticPlan',
    'attach',
    'rasterize_boxes',
)
