# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Batch-level transforms (nn.Modules applied on the device) and callbacks."""

from torchgeo_earthsynth.origins import SampleOrigin

from .cf_comp import (
    PASTE,
    REAL,
    TILE,
    CompositionPlan,
    CounterfactualComposition,
)
from .synthetic_augmentation import (
    BankLike,
    SynthesizerLoader,
    SyntheticAugmentation,
    SyntheticPlan,
    rasterize_boxes,
)
from .synthetic_callback import SyntheticAugmentationCallback, attach
from .synthetic_change import SyntheticChangePairs, fill_change_bank, make_change_pairs

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
    'SyntheticChangePairs',
    'SyntheticPlan',
    'attach',
    'fill_change_bank',
    'make_change_pairs',
    'rasterize_boxes',
)
