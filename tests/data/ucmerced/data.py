#!/usr/bin/env python3

# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Make a tiny fake UC Merced in TorchGeo's layout (run it; it rewrites its files).

``UCMerced_LandUse/Images/<class>/<class>00.tif`` (train) and ``<class>01.tif`` (val, test):
one RGB image per class and split, listed in ``uc_merced-{train,val,test}.txt``. Every class
folder exists, as ImageFolder labels are positions of the sorted folder names.
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))
from fake_files import save_random_rgb, write_class_folders  # noqa: E402

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
    write_class_folders(
        HERE / 'UCMerced_LandUse' / 'Images',
        CLASSES,
        lambda name, n: f'{name}{n:02d}.tif',
        lambda path: save_random_rgb(rng, path, SIZE),
        lambda split: HERE / f'uc_merced-{split}.txt',
    )


if __name__ == '__main__':
    main()
