# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Condition extractors on known inputs."""

from __future__ import annotations

import pytest
import torch

from torchgeo_earthsynth.controls import (
    CONTROL_NAMES,
    CONTROLS,
    ControlExtractor,
    class_map,
    depth_map,
    edge_map,
    road_map,
    sketch_map,
    soft_edge_map,
)
from torchgeo_earthsynth.vocabulary import NUM_CLASSES, PALETTE, VOCABULARY

SIZE = 32
ROAD = VOCABULARY.index('road')
WATER = VOCABULARY.index('water')


def straight_road_mask() -> torch.Tensor:
    """A vertical road 6 px wide through grass, [1, H, W]."""
    mask = torch.full((1, SIZE, SIZE), VOCABULARY.index('grass'))
    mask[:, :, 13:19] = ROAD
    return mask


def straight_road_image() -> torch.Tensor:
    """The road as a bright band on dark ground, RGB 0..255 [1, 3, H, W]."""
    image = torch.full((1, 3, SIZE, SIZE), 40.0)
    image[..., 13:19] = 200.0
    return image


def test_road_map_of_a_straight_road() -> None:
    mask = straight_road_mask()
    mask[0, 0, 0] = VOCABULARY.index('overpass')
    mask[0, 5, 5] = WATER
    road = road_map(mask)
    assert road.shape == (1, 1, SIZE, SIZE) and road.dtype == torch.float32
    expected = torch.zeros(SIZE, SIZE)
    expected[:, 13:19] = 1
    expected[0, 0] = 1  # an overpass is road
    assert torch.equal(road[0, 0], expected)
    with pytest.raises(ValueError, match='not in the vocabulary'):
        road_map(mask, ('motorway',))


@pytest.mark.parametrize('extract', [edge_map, sketch_map])
def test_a_straight_road_gives_straight_vertical_edges(extract: object) -> None:
    lines = extract(straight_road_image())  # type: ignore[operator]
    assert lines.shape == (1, 1, SIZE, SIZE)
    assert set(lines.unique().tolist()) <= {0.0, 1.0}
    columns = lines[0, 0, 2:-2].sum(0)  # away from the border
    on = columns.nonzero().flatten().tolist()
    assert on and all(10 <= c <= 21 for c in on)  # only at the road's two sides
    assert all(columns[c] == SIZE - 4 for c in on)  # each edge column is a full straight line
    assert lines[0, 0, :, :10].sum() == 0 and lines[0, 0, :, 22:].sum() == 0


def test_soft_edges_peak_at_the_road_sides_and_flat_is_zero() -> None:
    soft = soft_edge_map(straight_road_image())
    assert soft.shape == (1, 1, SIZE, SIZE) and 0 <= soft.min() and soft.max() == 1
    profile = soft[0, 0, SIZE // 2]
    assert set(profile.topk(4).indices.tolist()) <= {12, 13, 18, 19}
    assert profile[2] < 1e-6 and profile[16] < 1e-6  # flat ground and the road's middle
    flat = torch.full((2, 3, SIZE, SIZE), 90.0)
    for extract in (edge_map, soft_edge_map, sketch_map):
        assert extract(flat).max() < 1e-4  # rounding noise of the grey conversion at most


def test_depth_map_normalises_each_dem_and_handles_nodata() -> None:
    ramp = torch.arange(SIZE, dtype=torch.float32).expand(SIZE, SIZE) * 10 + 300  # metres
    dem = torch.stack([ramp, torch.full((SIZE, SIZE), 5.0)])
    dem[0, 0, 0] = torch.nan
    depth = depth_map(dem)
    assert depth.shape == (2, 1, SIZE, SIZE)
    assert depth[0, 0, 1, 0] == 0 and depth[0, 0, 1, -1] == 1
    assert torch.allclose(depth[0, 0, 1], torch.linspace(0, 1, SIZE))
    assert depth[0, 0, 0, 0] == 0  # no data
    assert depth[1].sum() == 0  # flat
    assert torch.equal(depth_map(dem.unsqueeze(1)), depth)
    with pytest.raises(ValueError, match='DEM'):
        depth_map(torch.zeros(1, 2, SIZE, SIZE))


def test_class_map_encodings() -> None:
    mask = straight_road_mask()
    onehot = class_map(mask, 'onehot')
    assert onehot.shape == (1, NUM_CLASSES, SIZE, SIZE)
    assert torch.equal(onehot.argmax(1), mask) and torch.equal(
        onehot.sum(1), torch.ones(1, SIZE, SIZE)
    )
    palette = class_map(mask)
    assert palette.shape == (1, 3, SIZE, SIZE)
    assert torch.allclose(palette[0, :, 0, 15] * 255, torch.tensor(PALETTE[ROAD]).float())
    assert torch.allclose(class_map(mask, 'grey')[0, :, 0, 15], torch.full((3,), ROAD / 255))
    with pytest.raises(ValueError, match="'onehot'"):
        class_map(mask, 'rgb')


def test_control_extractor_builds_the_controls_dict() -> None:
    batch = {'image': straight_road_image(), 'mask': straight_road_mask()}
    controls = ControlExtractor(['road', 'edges', 'depth', 'seg'])(batch)
    assert list(controls) == ['road', 'edges', 'seg']  # no DEM in the batch: depth skipped
    for name, values in controls.items():
        assert values.shape == (1, CONTROLS[name].channels, SIZE, SIZE)
        assert 0 <= values.min() and values.max() <= 1
    assert torch.equal(controls['road'], road_map(batch['mask']))
    with pytest.raises(ValueError, match=r'known:.*road'):
        ControlExtractor(['roads'])
    assert set(CONTROL_NAMES) == {'edges', 'soft_edges', 'sketch', 'road', 'depth', 'seg'}
