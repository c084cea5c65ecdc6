#!/usr/bin/env python3

# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Make a tiny fake ISPRS Vaihingen in TorchGeo's layout (run it; it rewrites its files).

``top/<area>.tif`` 3-band false-colour (IR, R, G) images and ``<area>.tif`` RGB colour masks
next to ``top/``; row ``r`` has the colour of class ``r % 6``.
"""

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32
HERE = Path(__file__).parent
COLOURS = (
    (255, 0, 0),
    (255, 255, 255),
    (0, 0, 255),
    (0, 255, 255),
    (0, 255, 0),
    (255, 255, 0),
)
AREAS = ('top_mosaic_09cm_area1.tif', 'top_mosaic_09cm_area11.tif', 'top_mosaic_09cm_area6.tif')


def main() -> None:
    """Write the fake dataset next to this script."""
    rng = np.random.default_rng(0)
    rows = np.arange(SIZE) % len(COLOURS)
    mask = np.array(COLOURS, dtype=np.uint8)[rows][:, None].repeat(SIZE, axis=1)
    shutil.rmtree(HERE / 'top', ignore_errors=True)
    (HERE / 'top').mkdir()
    for area in AREAS:
        image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(image).save(HERE / 'top' / area)
        Image.fromarray(mask).save(HERE / area)


if __name__ == '__main__':
    main()
