#!/usr/bin/env python3

# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Make a tiny fake UC Merced in TorchGeo's layout (run it; it rewrites its files).

``UCMerced_LandUse/Images/<class>/<class>00.tif`` (train) and ``<class>01.tif`` (val, test):
one RGB image per class and split, listed in ``uc_merced-{train,val,test}.txt``. Every class
folder exists, as ImageFolder labels are positions of the sorted folder names.
"""

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32
HERE = Path(__file__).parent
CLASSES = (
    'agricultural',
    'airplane',
    'baseballdiamond',
    'beach',
    'buildings',
    'chaparral',
    'denseresidential',
    'forest',
    'freeway',
    'golfcourse',
    'harbor',
    'intersection',
    'mediumresidential',
    'mobilehomepark',
    'overpass',
    'parkinglot',
    'river',
    'runway',
    'sparseresidential',
    'storagetanks',
    'tenniscourt',
)


def main() -> None:
    """Write the fake dataset next to this script."""
    rng = np.random.default_rng(0)
    shutil.rmtree(HERE / 'UCMerced_LandUse', ignore_errors=True)
    lists: dict[str, list[str]] = {'train': [], 'val': [], 'test': []}
    for name in CLASSES:
        folder = HERE / 'UCMerced_LandUse' / 'Images' / name
        folder.mkdir(parents=True)
        for n in range(2):
            image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            Image.fromarray(image).save(folder / f'{name}{n:02d}.tif')
        lists['train'].append(f'{name}00.tif')
        lists['val'].append(f'{name}01.tif')
        lists['test'].append(f'{name}01.tif')
    for split, names in lists.items():
        (HERE / f'uc_merced-{split}.txt').write_text('\n'.join(names) + '\n')


if __name__ == '__main__':
    main()
