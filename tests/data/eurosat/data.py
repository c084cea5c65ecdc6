#!/usr/bin/env python3

# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Make a tiny fake EuroSAT (13 bands) in TorchGeo's layout (run it; it rewrites its files).

``ds/images/remote_sensing/otherDatasets/sentinel_2/tif/<Class>/<Class>_1.tif`` (train) and
``_2.tif`` (val, test): 13-band uint16 GeoTIFFs of Sentinel-2 reflectance x 10000 (values in
``100..3500``, as EuroSAT's RGB bands mostly are), listed as ``.jpg`` in
``eurosat-{train,val,test}.txt`` as the released split files are.
"""

import shutil
from pathlib import Path

import numpy as np
import rasterio

SIZE = 16
HERE = Path(__file__).parent
BASE = Path('ds', 'images', 'remote_sensing', 'otherDatasets', 'sentinel_2', 'tif')
CLASSES = (
    'AnnualCrop',
    'Forest',
    'HerbaceousVegetation',
    'Highway',
    'Industrial',
    'Pasture',
    'PermanentCrop',
    'Residential',
    'River',
    'SeaLake',
)


def main() -> None:
    """Write the fake dataset next to this script."""
    rng = np.random.default_rng(0)
    shutil.rmtree(HERE / 'ds', ignore_errors=True)
    lists: dict[str, list[str]] = {'train': [], 'val': [], 'test': []}
    profile = {'driver': 'GTiff', 'dtype': 'uint16', 'count': 13}
    for name in CLASSES:
        folder = HERE / BASE / name
        folder.mkdir(parents=True)
        for n in (1, 2):
            image = rng.integers(100, 3501, (13, SIZE, SIZE)).astype(np.uint16)
            path = folder / f'{name}_{n}.tif'
            with rasterio.open(path, 'w', width=SIZE, height=SIZE, **profile) as f:
                f.write(image)
        lists['train'].append(f'{name}_1.jpg')
        lists['val'].append(f'{name}_2.jpg')
        lists['test'].append(f'{name}_2.jpg')
    for split, names in lists.items():
        (HERE / f'eurosat-{split}.txt').write_text('\n'.join(names) + '\n')


if __name__ == '__main__':
    main()
