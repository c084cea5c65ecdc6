#!/usr/bin/env python3

# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Make a tiny fake NWPU-RESISC45 in TorchGeo's layout (run it; it rewrites its files).

``NWPU-RESISC45/<class>/<class>_001.jpg`` (train) and ``_002.jpg`` (val, test), listed in
``resisc45-{train,val,test}.txt``; every one of the 45 class folders exists.
"""

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32
HERE = Path(__file__).parent
CLASSES = (
    'airplane airport baseball_diamond basketball_court beach bridge chaparral church '
    'circular_farmland cloud commercial_area dense_residential desert forest freeway '
    'golf_course ground_track_field harbor industrial_area intersection island lake meadow '
    'medium_residential mobile_home_park mountain overpass palace parking_lot railway '
    'railway_station rectangular_farmland river roundabout runway sea_ice ship snowberg '
    'sparse_residential stadium storage_tank tennis_court terrace thermal_power_station '
    'wetland'
).split()


def main() -> None:
    """Write the fake dataset next to this script."""
    rng = np.random.default_rng(0)
    shutil.rmtree(HERE / 'NWPU-RESISC45', ignore_errors=True)
    lists: dict[str, list[str]] = {'train': [], 'val': [], 'test': []}
    for name in CLASSES:
        folder = HERE / 'NWPU-RESISC45' / name
        folder.mkdir(parents=True)
        for n in (1, 2):
            image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            Image.fromarray(image).save(folder / f'{name}_{n:03d}.jpg')
        lists['train'].append(f'{name}_001.jpg')
        lists['val'].append(f'{name}_002.jpg')
        lists['test'].append(f'{name}_002.jpg')
    for split, names in lists.items():
        (HERE / f'resisc45-{split}.txt').write_text('\n'.join(names) + '\n')


if __name__ == '__main__':
    main()
