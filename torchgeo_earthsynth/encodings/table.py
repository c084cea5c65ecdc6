# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The encodings of the datasets supported out of the box."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import torch

from torchgeo_earthsynth.compat import TORCHGEO_VERSION_TUPLE
from torchgeo_earthsynth.encodings.encoding import DatasetEncoding, Task, vocabulary_id
from torchgeo_earthsynth.vocabulary import BACKGROUND


def _segmentation(
    name: str, pairs: Sequence[tuple[str, int, int | str]], **kwargs: Any
) -> DatasetEncoding:
    """An encoding from ``(class, value, vocabulary id or name)`` rows."""
    return DatasetEncoding(
        name,
        kwargs.pop('task', 'segmentation'),
        tuple(c for c, _, _ in pairs),
        tuple(v for _, v, _ in pairs),
        tuple(vocabulary_id(t, f'{name} {c!r}') for c, _, t in pairs),
        **kwargs,
    )


def _positional(
    name: str, task: Task, pairs: Sequence[tuple[str, int | str]], **kwargs: Any
) -> DatasetEncoding:
    """An encoding whose values are the positions of ``(class, vocabulary)`` rows."""
    rows = [(c, i, t) for i, (c, t) in enumerate(pairs)]
    return _segmentation(name, rows, task=task, **kwargs)


#: No vocabulary counterpart: the class is kept but never synthesised.
NONE: Final[int] = BACKGROUND

#: EuroSAT's bands in the order TorchGeo loads them (``EuroSAT.all_band_names``: B8A last).
_EUROSAT_BANDS = (*(f'B{i:02d}' for i in range(1, 13)), 'B8A')

_ISPRS = (
    ('Clutter/background', 'background'),
    ('Impervious surfaces', 'pavement'),
    ('Building', 'building'),
    ('Low Vegetation', 'grass'),
    ('Tree', 'tree'),
    ('Car', 'small vehicle'),
)

#: The datasets supported out of the box, by name (TorchGeo's class name).
ENCODINGS: Final[Mapping[str, DatasetEncoding]] = {
    e.name: e
    for e in (
        # LoveDA returns the raw mask: 0 no-data, 1 background ... 7 agriculture, while
        # LoveDA.classes lists no-data last.
        _segmentation(
            'LoveDA',
            (
                ('background', 1, 'background'),
                ('building', 2, 'building'),
                ('road', 3, 'road'),
                ('water', 4, 'water'),
                ('barren', 5, 'barren land'),
                ('forest', 6, 'forest land'),
                ('agriculture', 7, 'agriculture land'),
                ('no-data', 0, 'background'),
            ),
            ignore=(0,),
        ),
        # rgb_to_mask gives each colour its position; colours outside the map become 0.
        _positional(
            'DeepGlobeLandCover',
            'segmentation',
            (
                ('Urban land', 'urban land'),
                ('Agriculture land', 'agriculture land'),
                ('Rangeland', 'grass'),
                ('Forest land', 'forest land'),
                ('Water', 'water'),
                ('Barren land', 'barren land'),
                ('Unknown', 'background'),
            ),
            ignore=(6,),
            notes='mask colours outside the colour map load as 0 (Urban land)',
        ),
        _positional(
            'Potsdam2D',
            'segmentation',
            _ISPRS,
            bands=('R', 'G', 'B', 'IR'),
            rgb_path=(
                'PotsdamDataModule(..., transforms=SelectBands((0, 1, 2))) '
                '(from torchgeo_earthsynth.encodings.registry)'
            ),
        ),
        _positional(
            'Vaihingen2D',
            'segmentation',
            _ISPRS,
            bands=('IR', 'R', 'G'),
            rgb=None,
            notes='images are false-colour IR-R-G: there is no blue band',
        ),
        _positional(
            'UCMerced',
            'classification',
            (
                ('agricultural', 'agriculture land'),
                ('airplane', 'plane'),
                ('baseballdiamond', 'baseball diamond'),
                ('beach', NONE),
                ('buildings', 'building'),
                ('chaparral', NONE),
                ('denseresidential', 'urban land'),
                ('forest', 'forest land'),
                ('freeway', 'road'),
                ('golfcourse', 'golf field'),
                ('harbor', 'harbor'),
                ('intersection', 'intersection'),
                ('mediumresidential', NONE),
                ('mobilehomepark', NONE),
                ('overpass', 'overpass'),
                ('parkinglot', NONE),
                ('river', 'water'),
                ('runway', NONE),
                ('sparseresidential', NONE),
                ('storagetanks', 'storage tank'),
                ('tenniscourt', 'tennis court'),
            ),
            notes='labels are positions in the sorted class folders; images resized to 256',
        ),
        # ImageFolder labels: positions of the sorted class folder names.
        _positional(
            'EuroSAT',
            'classification',
            (
                ('AnnualCrop', 'agriculture land'),
                ('Forest', 'forest land'),
                ('HerbaceousVegetation', 'grass'),
                ('Highway', 'road'),
                ('Industrial', NONE),
                ('Pasture', NONE),
                ('PermanentCrop', NONE),
                ('Residential', 'urban land'),
                ('River', NONE),
                ('SeaLake', 'water'),
            ),
            bands=_EUROSAT_BANDS,
            rgb=(3, 2, 1),
            pixel_max=65535.0,
            gain=None,
            band_option='bands',
            units='reflectance',
            pixels_per_unit=10000.0,
            rgb_path="EuroSATDataModule(..., bands=('B04', 'B03', 'B02')) (EuroSAT.rgb_bands)",
            notes=(
                'Sentinel-2 L1C reflectance x 10000 (RGB bands mostly below ~3500); '
                'synthetic 0..255 RGB needs image_scale=<gain>, e.g. 10000 / 255 / 2.5 '
                "(Sentinel Hub's true-colour gain 2.5)"
            ),
        ),
        _positional(
            'RESISC45',
            'classification',
            (
                ('airplane', 'plane'),
                ('airport', 'airport'),
                ('baseball_diamond', 'baseball diamond'),
                ('basketball_court', 'basketball court'),
                ('beach', NONE),
                ('bridge', 'bridge'),
                ('chaparral', NONE),
                ('church', NONE),
                ('circular_farmland', NONE),
                ('cloud', NONE),
                ('commercial_area', NONE),
                ('dense_residential', 'urban land'),
                ('desert', 'barren land'),
                ('forest', 'forest land'),
                ('freeway', 'road'),
                ('golf_course', 'golf field'),
                ('ground_track_field', 'ground track field'),
                ('harbor', 'harbor'),
                ('industrial_area', NONE),
                ('intersection', 'intersection'),
                ('island', NONE),
                ('lake', 'water'),
                ('meadow', 'grass'),
                ('medium_residential', NONE),
                ('mobile_home_park', NONE),
                ('mountain', NONE),
                ('overpass', 'overpass'),
                ('palace', NONE),
                ('parking_lot', NONE),
                ('railway', NONE),
                ('railway_station', 'train station'),
                ('rectangular_farmland', 'agriculture land'),
                ('river', NONE),
                ('roundabout', 'roundabout'),
                ('runway', NONE),
                ('sea_ice', NONE),
                ('ship', 'ship'),
                ('snowberg', NONE),
                ('sparse_residential', NONE),
                ('stadium', 'stadium'),
                ('storage_tank', 'storage tank'),
                ('tennis_court', 'tennis court'),
                ('terrace', NONE),
                ('thermal_power_station', NONE),
                ('wetland', NONE),
            ),
        ),
        # COCO category ids: 1..10, 0 is background (VHR10.categories; TorchGeo 0.10
        # renamed 'ships' to 'ship', the ids stayed).
        _positional(
            'VHR10',
            'detection',
            (
                ('background', 'background'),
                ('airplane', 'plane'),
                ('ship' if TORCHGEO_VERSION_TUPLE >= (0, 10) else 'ships', 'ship'),
                ('storage tank', 'storage tank'),
                ('baseball diamond', 'baseball diamond'),
                ('tennis court', 'tennis court'),
                ('basketball court', 'basketball court'),
                ('ground track field', 'ground track field'),
                ('harbor', 'harbor'),
                ('bridge', 'bridge'),
                ('vehicle', 'vehicle'),
            ),
            notes='85 of its images are colour-infrared (Vaihingen); the rest true colour',
        ),
        _positional(
            'DIOR',
            'detection',
            (
                ('airplane', 'plane'),
                ('airport', 'airport'),
                ('baseballfield', 'baseball diamond'),
                ('basketballcourt', 'basketball court'),
                ('bridge', 'bridge'),
                ('chimney', 'chimney'),
                ('dam', 'dam'),
                ('expresswayservicearea', 'expressway service area'),
                ('expresswaytollstation', 'expressway toll station'),
                ('golffield', 'golf field'),
                ('groundtrackfield', 'ground track field'),
                ('harbor', 'harbor'),
                ('overpass', 'overpass'),
                ('ship', 'ship'),
                ('stadium', 'stadium'),
                ('storagetank', 'storage tank'),
                ('tenniscourt', 'tennis court'),
                ('trainstation', 'train station'),
                ('vehicle', 'vehicle'),
                ('windmill', 'windmill'),
            ),
            dtype=torch.uint8,
        ),
        # An EarthSynth-180K source (not a TorchGeo 0.8 dataset): values as released.
        _positional(
            'OpenEarthMap',
            'segmentation',
            (
                ('background', 'background'),
                ('bareland', 'bare land'),
                ('rangeland', 'grass'),
                ('developed space', 'pavement'),
                ('road', 'road'),
                ('tree', 'tree'),
                ('water', 'water'),
                ('agriculture land', 'agriculture land'),
                ('building', 'building'),
            ),
        ),
    )
}


__all__ = (
    'ENCODINGS',
    'NONE',
)
