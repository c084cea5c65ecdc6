# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Where a training sample came from: the codes batch plans record per row."""

from __future__ import annotations

from enum import IntEnum

__all__ = ('SampleOrigin',)


class SampleOrigin(IntEnum):
    """Where a row of a training batch came from (one code space for every batch plan).

    :class:`~torchgeo_earthsynth.transforms.CompositionPlan` uses ``REAL``, ``PASTE`` and
    ``TILE``; :class:`~torchgeo_earthsynth.transforms.SyntheticPlan` uses ``REAL``,
    ``GENERATED`` and ``BANK``. ``REAL`` always means the real sample, untouched.

    .. versionadded:: 0.1
    """

    #: The real sample as the dataset gave it.
    REAL = 0
    #: CF-Comp: category regions of donor samples pasted into the real one.
    PASTE = 1
    #: CF-Comp: 2x2 tiles of downscaled samples.
    TILE = 2
    #: Generated online by a synthesizer from the sample's condition.
    GENERATED = 3
    #: Drawn from a bank of synthetic samples.
    BANK = 4
