# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Spectral bands: ranges, name matching across datasets' spellings, errors."""

from __future__ import annotations

import pytest
import torch

from torchgeo_earthsynth.encodings import SENTINEL2_BANDS, SpectralBands, canonical_band


def test_common_names_fold_onto_sentinel2() -> None:
    assert [canonical_band(b) for b in ('R', 'G', 'B', 'IR', 'B8A', 'b05')] == [
        'B04',
        'B03',
        'B02',
        'B08',
        'B08A',
        'B05',
    ]


def test_indices_match_across_spellings_and_name_the_missing() -> None:
    sentinel = SpectralBands(SENTINEL2_BANDS, (0.0,) * 13, (1.0,) * 13)
    assert sentinel.indices(('IR', 'R', 'G')) == (7, 3, 2)
    rgbi = SpectralBands(('R', 'G', 'B', 'IR'), (0.0,) * 4, (255.0,) * 4, 'dn8')
    with pytest.raises(ValueError, match=r"\['B01', 'B11'\] are not among"):
        rgbi.indices(('B01', 'B04', 'B11'))


def test_physical_round_trip_per_band() -> None:
    bands = SpectralBands(('B04', 'B08'), (0.0, 0.1), (0.5, 0.9))
    images = torch.tensor([0.0, 255.0]).view(1, 1, 2).expand(2, 1, 2).clone()
    physical = bands.to_physical(images)
    assert torch.allclose(physical[0, 0], torch.tensor([0.0, 0.5]))
    assert torch.allclose(physical[1, 0], torch.tensor([0.1, 0.9]))
    assert torch.allclose(bands.from_physical(physical), images)
    with pytest.raises(ValueError, match='3 bands, expected 2'):
        bands.to_physical(torch.zeros(3, 2, 2))


@pytest.mark.parametrize(
    ('names', 'low', 'high', 'match'),
    [
        (('B04', 'B08'), (0.0,), (1.0, 1.0), 'one range per band'),
        (('R', 'B04'), (0.0, 0.0), (1.0, 1.0), 'repeat'),
        (('B04',), (0.5,), (0.5,), 'band B04: maximum 0.5 must exceed'),
    ],
)
def test_bad_bands_are_refused(
    names: tuple[str, ...], low: tuple[float, ...], high: tuple[float, ...], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        SpectralBands(names, low, high)
