#!/usr/bin/env python3

# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Make a tiny fake NWPU-RESISC45 in TorchGeo's layout (run it; it rewrites its files).

``NWPU-RESISC45/<class>/<class>_001.jpg`` (train) and ``_002.jpg`` (val, test), listed in
``resisc45-{train,val,test}.txt``; every one of the 45 class folders exists.
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))
from fake_files import save_random_rgb, write_class_folders  # noqa: E402

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
    write_class_folders(
        HERE / 'NWPU-RESISC45',
        CLASSES,
        lambda name, n: f'{name}_{n + 1:03d}.jpg',
        lambda path: save_random_rgb(rng, path, SIZE),
        lambda split: HERE / f'resisc45-{split}.txt',
    )


if __name__ == '__main__':
    main()
