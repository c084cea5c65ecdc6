# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The multispectral mini corpus: 13 Sentinel-2 bands as reflectance, or RGBI as dn8."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from torchgeo_earthsynth.datamodules import EarthSynthMiniMultispectralDataModule
from torchgeo_earthsynth.datasets import EarthSynthMini, EarthSynthMiniMultispectral
from torchgeo_earthsynth.encodings.bands import SENTINEL2_BANDS
from torchgeo_earthsynth.vocabulary import CLASS_IDS

SIZE = 32


@pytest.fixture(scope='module')
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp('mini-ms')


def _dataset(root: Path, variant: str, **kwargs: object) -> EarthSynthMiniMultispectral:
    return EarthSynthMiniMultispectral(
        root, variant=variant, size=SIZE, num_train=8, num_val=4, **kwargs
    )


def _class_mean(dataset: EarthSynthMiniMultispectral, band: str, cls: str) -> float:
    """Mean value of one band over every pixel of one class in the dataset."""
    index = dataset.bands.indices([band])[0]
    values = [s['image'][index][s['mask'] == CLASS_IDS[cls]] for s in dataset]
    pixels = torch.cat(values)
    assert len(pixels), f'no {cls} pixels in the test corpus'
    return float(pixels.mean())


def test_sentinel2_is_13_bands_of_reflectance_with_the_scene_keys(root: Path) -> None:
    dataset = _dataset(root, 'sentinel2')
    scene = EarthSynthMini(root, size=SIZE, num_train=8, num_val=4)[0]
    sample = dataset[0]
    assert dataset.bands.names == SENTINEL2_BANDS
    assert dataset.bands.units == 'reflectance' and dataset.bands.maximum == (1.0,) * 13
    assert sample['image'].shape == (13, SIZE, SIZE) and sample['image'].dtype == torch.float32
    assert 0 <= float(sample['image'].min()) and float(sample['image'].max()) <= 1
    assert sample['mask'].dtype == torch.long and sample['mask'].shape == (SIZE, SIZE)
    assert torch.equal(sample['mask'], scene['mask'])
    assert sample['prompt'] == scene['prompt']
    assert set(scene) <= set(sample)


def test_sentinel2_spectra_separate_vegetation_water_and_soil(root: Path) -> None:
    dataset = _dataset(root, 'sentinel2')
    # vegetation: NIR plateau far above red
    assert _class_mean(dataset, 'B08', 'tree') > 2 * _class_mean(dataset, 'B04', 'tree')
    # water: dark in NIR and SWIR, darker than vegetation there
    assert _class_mean(dataset, 'B08', 'water') < 0.05
    assert _class_mean(dataset, 'B11', 'water') < _class_mean(dataset, 'B11', 'tree')


def test_rgbi_is_four_8_bit_bands_whose_rgb_is_the_scene(root: Path) -> None:
    dataset = _dataset(root, 'rgbi')
    scene = EarthSynthMini(root, size=SIZE, num_train=8, num_val=4)[1]
    sample = dataset[1]
    assert dataset.bands.names == ('R', 'G', 'B', 'IR') and dataset.bands.units == 'dn8'
    assert dataset.bands.indices(['B08']) == (3,)  # IR is Sentinel-2's NIR by name
    assert sample['image'].shape == (4, SIZE, SIZE)
    assert torch.equal(sample['image'][:3], scene['image'].float())
    assert 0 <= float(sample['image'].min()) and float(sample['image'].max()) <= 255
    assert _class_mean(dataset, 'IR', 'tree') > _class_mean(dataset, 'R', 'tree')


def test_long_tail_and_split_pass_through(root: Path) -> None:
    plain = _dataset(root / 'plain', 'rgbi')
    tail = _dataset(root / 'tail', 'rgbi', long_tail=True)
    val = _dataset(root / 'plain', 'rgbi', split='val')
    assert len(val) == 4 and len(plain) == 8
    expected = EarthSynthMini(root / 'tail', size=SIZE, num_train=8, num_val=4, long_tail=True)
    assert [s['prompt'] for s in tail] == [s['prompt'] for s in expected]


def test_unknown_variant_is_refused(root: Path) -> None:
    with pytest.raises(ValueError, match=r"variant must be one of .*'landsat'"):
        _dataset(root, 'landsat')


def test_plot_shows_an_rgb_composite_and_the_mask(root: Path) -> None:
    dataset = _dataset(root, 'sentinel2')
    sample = dataset[0]
    figure = dataset.plot({**sample, 'prediction': sample['mask']}, suptitle='scene')
    assert isinstance(figure, Figure)
    images = [ax.get_images()[0].get_array() for ax in figure.axes]
    assert len(images) == 3 and images[0].shape == (SIZE, SIZE, 3)
    assert float(images[0].max()) == pytest.approx(1.0)  # stretched, not a dark composite
    plt.close(figure)


def test_datamodule_batches_stay_in_physical_units(root: Path) -> None:
    datamodule = EarthSynthMiniMultispectralDataModule(
        root=root, tile_size=SIZE, num_train=8, num_val=4, batch_size=4
    )
    datamodule.setup('fit')
    batch = next(iter(datamodule.train_dataloader()))
    batch = datamodule.on_after_batch_transfer(batch, 0)
    assert batch['image'].shape == (4, 13, SIZE, SIZE)
    assert float(batch['image'].max()) <= 1  # not divided by 255, not rescaled
    assert float(batch['image'].max()) > 0.2
    assert len(datamodule.val_dataset) == 2 and len(datamodule.test_dataset) == 2
