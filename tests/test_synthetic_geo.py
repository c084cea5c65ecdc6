# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from torch import Tensor
from torchgeo.datasets import RasterDataset, stack_samples
from torchgeo.samplers import GridGeoSampler

from torchgeo_earthsynth.geo import metadata_from_geo_sample
from torchgeo_earthsynth.transforms.synthetic_augmentation import SyntheticAugmentation

CLASSES = ('background', 'water', 'tree')
# two UTM 31N tiles, 10 m pixels, far enough apart to differ in lon and lat
TILES = {'20210714': (499_920, 5_000_080), '20190301': (600_000, 5_300_000)}


class DatedImages(RasterDataset):
    filename_glob = 'image_*.tif'
    filename_regex = r'^image_(?P<date>\d{8})\.tif$'
    date_format = '%Y%m%d'


class Masks(RasterDataset):
    filename_glob = 'mask_*.tif'
    is_image = False


def write(path: Path, left: float, top: float, bands: int, value: int) -> None:
    transform = rasterio.transform.from_origin(left, top, 10, 10)
    profile = dict(driver='GTiff', width=16, height=16, count=bands, dtype='uint8')
    with rasterio.open(path, 'w', transform=transform, crs='EPSG:32631', **profile) as dst:
        dst.write(np.full((bands, 16, 16), value, dtype=np.uint8))


class RecordingGenerator:
    """A generator conditioned on metadata that records what it is asked for."""

    device = torch.device('cpu')

    def __init__(self) -> None:
        self.metadata: list[Tensor | None] = []
        # a mask-conditioned generator with metadata, not a multi-condition one
        self.accepts = {'prompt', 'mask', 'metadata'}

    def takes(self, key: str) -> bool:
        return key in self.accepts

    def generate(
        self, masks: Tensor, prompts: list[str], seeds: list[int], *, metadata: Tensor | None
    ) -> Tensor:
        self.metadata.append(metadata)
        return torch.full((len(masks), 3, *masks.shape[-2:]), 128.0)


@pytest.fixture
def geo(tmp_path: Path) -> tuple[Any, dict[str, Any]]:
    for date, (left, top) in TILES.items():
        write(tmp_path / f'image_{date}.tif', left, top, 3, 100)
        write(tmp_path / f'mask_{date}.tif', left, top, 1, 1)  # water
    dataset = DatedImages(tmp_path) & Masks(tmp_path)
    queries = list(GridGeoSampler(dataset, size=16, stride=16))
    assert len(queries) == 2
    batch = stack_samples([dataset[query] for query in queries])
    batch['image'] = batch['image'].float()
    batch['mask'] = batch['mask'].reshape(2, 16, 16).long()
    return dataset, batch


def test_generates_for_each_samples_place_and_date(geo: tuple[Any, dict[str, Any]]) -> None:
    dataset, batch = geo
    generator = RecordingGenerator()
    augmentation = SyntheticAugmentation(
        classes=CLASSES,
        source='online',
        p=1.0,
        synthesizer=generator,  # type: ignore[arg-type]
    )
    # TorchGeo 0.10 batches carry no CRS: it comes from the datamodule's dataset
    augmentation.geo.fit_to(SimpleNamespace(train_dataset=dataset))
    out = augmentation(batch)
    assert augmentation.stats['generated'] == 2 and out['image'].eq(128).all()
    (metadata,) = generator.metadata
    assert metadata is not None and metadata.shape == (2, 7)
    want = metadata_from_geo_sample(batch, res=dataset.res, crs=dataset.crs)
    torch.testing.assert_close(metadata, want, equal_nan=True)
    dates = {tuple(int(v) for v in row[4:].tolist()) for row in metadata}
    assert dates == {(2021, 7, 14), (2019, 3, 1)}
    assert metadata[:, 2].eq(10).all()  # GSD in metres, from the dataset's resolution
    assert 2.9 < metadata[:, 0].min() < 3.1 < metadata[:, 0].max()  # two places
    assert math.isnan(metadata[0, 3])  # cloud cover: unknown


def test_metadata_in_the_batch_wins_and_plain_generators_get_none(
    geo: tuple[Any, dict[str, Any]],
) -> None:
    _, batch = geo
    given = torch.tensor([[1.0, 2, 3, 0, 2020, 1, 1], [4, 5, 6, 0, 2021, 2, 2]])
    generator = RecordingGenerator()
    augmentation = SyntheticAugmentation(
        classes=CLASSES,
        source='online',
        p=1.0,
        synthesizer=generator,  # type: ignore[arg-type]
    )
    assert torch.equal(
        augmentation.geo.for_generator(generator, {**batch, 'metadata': given}, [1]), given[1:]
    )
    generator.accepts.discard('metadata')
    assert augmentation.geo.for_generator(generator, batch, [0, 1]) is None
    generator.accepts.add('metadata')
    assert augmentation.geo.for_generator(generator, {'image': batch['image']}, [0]) is None
