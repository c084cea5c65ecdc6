# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The synthetic bank: a disk cache of synthetic samples, its records and its layouts."""

from torchgeo_earthsynth.bank.change_pairs import ChangePairBank
from torchgeo_earthsynth.bank.layouts import (
    LayoutDraw,
    class_counts,
    draw_layouts,
)
from torchgeo_earthsynth.bank.records import (
    CLAIMS,
    PARTS,
    SUMMARY,
)
from torchgeo_earthsynth.bank.store import (
    SyntheticBank,
    default_writer_id,
)

__all__ = (
    'CLAIMS',
    'PARTS',
    'SUMMARY',
    'ChangePairBank',
    'LayoutDraw',
    'SyntheticBank',
    'class_counts',
    'default_writer_id',
    'draw_layouts',
)
