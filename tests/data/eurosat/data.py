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
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))
from fake_files import write_class_folders, write_geotiff  # noqa: E402

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
    write_class_folders(
        HERE / BASE,
        CLASSES,
        lambda name, n: f'{name}_{n + 1}.tif',
        lambda path: write_geotiff(
            path, rng.integers(100, 3501, (13, SIZE, SIZE)).astype(np.uint16)
        ),
        lambda split: HERE / f'eurosat-{split}.txt',
        listed_as=lambda file: file.replace('.tif', '.jpg'),
    )


if __name__ == '__main__':
    main()
