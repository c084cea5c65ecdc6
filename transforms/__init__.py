# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Batch-level transforms (nn.Modules applied on the device) and callbacks."""

from .cf_comp import PASTE, REAL, TILE, CompositionPlan, CounterfactualComposition

__all__ = ('PASTE', 'REAL', 'TILE', 'CompositionPlan', 'CounterfactualComposition')
