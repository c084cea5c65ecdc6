# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Dataset encodings: how a dataset's labels map to vocabulary ids, and its registry."""

from torchgeo_earthsynth.encodings.bands import (
    SENTINEL2_BANDS,
    SpectralBands,
    canonical_band,
)
from torchgeo_earthsynth.encodings.encoding import (
    RGB,
    DatasetEncoding,
    SelectBands,
    Task,
    normalise_name,
    vocabulary_id,
)
from torchgeo_earthsynth.encodings.label_maps import (
    LABEL_MAPS,
    label_map,
)
from torchgeo_earthsynth.encodings.registry import (
    ENCODINGS,
    NONE,
    encoding_for,
    explicit_encoding,
    resolve_encoding,
)

__all__ = (
    'ENCODINGS',
    'LABEL_MAPS',
    'NONE',
    'RGB',
    'SENTINEL2_BANDS',
    'DatasetEncoding',
    'SelectBands',
    'SpectralBands',
    'Task',
    'canonical_band',
    'encoding_for',
    'explicit_encoding',
    'label_map',
    'normalise_name',
    'resolve_encoding',
    'vocabulary_id',
)
