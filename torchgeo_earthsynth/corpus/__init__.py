# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Build an EarthSynth-180K-layout corpus from your own GeoTIFF scenes and labels.

Its names are imported on first use: ``earthsynth build-corpus --help`` (in
:mod:`.cli`) must not wait for the builder's torch and rasterio.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torchgeo_earthsynth.corpus.builder import BuildReport as BuildReport
    from torchgeo_earthsynth.corpus.builder import build_corpus as build_corpus
    from torchgeo_earthsynth.corpus.cli import CLI_FLAGS as CLI_FLAGS
    from torchgeo_earthsynth.corpus.cli import cli_message as cli_message
    from torchgeo_earthsynth.corpus.cli import main as main
    from torchgeo_earthsynth.corpus.labels import VECTOR_SUFFIXES as VECTOR_SUFFIXES
    from torchgeo_earthsynth.corpus.labels import BBox as BBox
    from torchgeo_earthsynth.corpus.labels import Labels as Labels
    from torchgeo_earthsynth.corpus.labels import RasterLabels as RasterLabels
    from torchgeo_earthsynth.corpus.labels import VectorFile as VectorFile
    from torchgeo_earthsynth.corpus.labels import VectorLabels as VectorLabels
    from torchgeo_earthsynth.corpus.labels import intersects as intersects
    from torchgeo_earthsynth.corpus.labels import lookup_table as lookup_table
    from torchgeo_earthsynth.corpus.labels import open_raster_labels as open_raster_labels
    from torchgeo_earthsynth.corpus.scene_metadata import ACQUISITION_TAG as ACQUISITION_TAG
    from torchgeo_earthsynth.corpus.scene_metadata import crop_fields as crop_fields
    from torchgeo_earthsynth.corpus.scene_metadata import parse_date as parse_date
    from torchgeo_earthsynth.corpus.scene_metadata import pixel_size_metres as pixel_size_metres
    from torchgeo_earthsynth.corpus.scene_metadata import scene_date as scene_date
    from torchgeo_earthsynth.corpus.scene_metadata import window_bbox as window_bbox
    from torchgeo_earthsynth.corpus.scenes import STRETCH_SAMPLE_SIZE as STRETCH_SAMPLE_SIZE
    from torchgeo_earthsynth.corpus.scenes import PreparedScene as PreparedScene
    from torchgeo_earthsynth.corpus.scenes import SceneOptions as SceneOptions
    from torchgeo_earthsynth.corpus.scenes import nodata_pixels as nodata_pixels
    from torchgeo_earthsynth.corpus.scenes import open_scene as open_scene
    from torchgeo_earthsynth.corpus.scenes import prepare_scene as prepare_scene
    from torchgeo_earthsynth.corpus.scenes import random_windows as random_windows
    from torchgeo_earthsynth.corpus.scenes import to_uint8 as to_uint8

#: Public name -> the submodule that defines it.
_SUBMODULE = {
    'BuildReport': 'builder',
    'build_corpus': 'builder',
    'CLI_FLAGS': 'cli',
    'cli_message': 'cli',
    'main': 'cli',
    'VECTOR_SUFFIXES': 'labels',
    'BBox': 'labels',
    'Labels': 'labels',
    'RasterLabels': 'labels',
    'VectorFile': 'labels',
    'VectorLabels': 'labels',
    'intersects': 'labels',
    'lookup_table': 'labels',
    'open_raster_labels': 'labels',
    'ACQUISITION_TAG': 'scene_metadata',
    'crop_fields': 'scene_metadata',
    'parse_date': 'scene_metadata',
    'pixel_size_metres': 'scene_metadata',
    'scene_date': 'scene_metadata',
    'window_bbox': 'scene_metadata',
    'STRETCH_SAMPLE_SIZE': 'scenes',
    'PreparedScene': 'scenes',
    'SceneOptions': 'scenes',
    'nodata_pixels': 'scenes',
    'open_scene': 'scenes',
    'prepare_scene': 'scenes',
    'random_windows': 'scenes',
    'to_uint8': 'scenes',
}


def __getattr__(name: str) -> Any:
    if name not in _SUBMODULE:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    return getattr(importlib.import_module(f'{__name__}.{_SUBMODULE[name]}'), name)


__all__ = tuple(sorted(_SUBMODULE))
