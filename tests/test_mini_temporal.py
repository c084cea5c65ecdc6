# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""EarthSynthMiniTemporal: places over dates, exact change masks."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch

from torchgeo_earthsynth.conditions import METADATA_FIELDS
from torchgeo_earthsynth.datasets import EarthSynthMiniTemporal
from torchgeo_earthsynth.vocabulary import CLASS_IDS

YEAR, MONTH = METADATA_FIELDS.index('year'), METADATA_FIELDS.index('month')


@pytest.fixture(scope='module')
def dataset(tmp_path_factory: pytest.TempPathFactory) -> EarthSynthMiniTemporal:
    root = tmp_path_factory.mktemp('mini')
    return EarthSynthMiniTemporal(root, frames=3, size=32, num_train=12, num_val=4)


def test_sequences_have_frames_dates_and_exact_change(dataset: EarthSynthMiniTemporal) -> None:
    changed = 0
    for i in range(len(dataset)):
        sample = dataset[i]
        assert sample['frames'].shape == (3, 3, 32, 32)
        assert sample['frame_metadata'].shape == (7, 3)
        assert sample['image'].shape == (3, 32, 32) and sample['metadata'].shape == (7,)
        # frames are a year apart, oldest first, before the target's year; same place
        years = sample['frame_metadata'][YEAR]
        assert years.tolist() == [sample['metadata'][YEAR] - k for k in (3, 2, 1)]
        torch.testing.assert_close(
            sample['frame_metadata'][:2], sample['metadata'][:2, None].expand(2, 3)
        )
        # the change mask is exactly the pixels whose class changed, and they became buildings
        differs = sample['mask'] != sample['before_mask']
        assert torch.equal(sample['change'].bool(), differs)
        assert (sample['mask'][differs] == CLASS_IDS['building']).all()
        assert (sample['before_mask'][differs] != CLASS_IDS['water']).all()
        if differs.any():
            changed += 1
            assert 'building' in sample['prompt']
    assert 0 < changed < len(dataset)
    # the same read twice is the same sample (seeded per place)
    torch.testing.assert_close(dataset[2]['frames'], dataset[2]['frames'])


def test_frames_change_with_the_season(tmp_path: Path) -> None:
    dataset = EarthSynthMiniTemporal(
        tmp_path, frames=4, change_probability=0.0, size=32, num_train=8, num_val=2
    )
    sample = dataset[0]
    assert not sample['change'].any()
    months = sample['frame_metadata'][MONTH]
    assert ((months >= 1) & (months <= 12)).all()
    # one mask rendered at four dates: the images differ (season, texture), the layout not
    frames = sample['frames']
    assert not torch.allclose(frames[:, 0], frames[:, 1])
    assert torch.equal(sample['mask'], sample['before_mask'])


def test_plot_and_errors(dataset: EarthSynthMiniTemporal, tmp_path: Path) -> None:
    sample = dataset[0]
    figure = dataset.plot({**sample, 'prediction': sample['image']}, suptitle='sequence')
    assert len(figure.axes) == 6  # 3 frames, target, prediction, change
    plt.close(figure)
    with pytest.raises(ValueError, match='frames must be >= 1'):
        EarthSynthMiniTemporal(tmp_path, frames=0)
    with pytest.raises(ValueError, match='change_probability'):
        EarthSynthMiniTemporal(tmp_path, change_probability=1.5)
