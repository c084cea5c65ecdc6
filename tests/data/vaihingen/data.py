#!/usr/bin/env python3

# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Make a tiny fake ISPRS Vaihingen in TorchGeo's layout (run it; it rewrites its files).

``top/<area>.tif`` 3-band false-colour (IR, R, G) images and ``<area>.tif`` RGB colour masks
next to ``top/``; row ``r`` has the colour of class ``r % 6``.
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parents[1]))
from fake_files import fresh_folder, save_random_rgb, striped_colour_mask  # noqa: E402

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
    mask = striped_colour_mask(COLOURS, SIZE)
    top = fresh_folder(HERE / 'top')
    for area in AREAS:
        save_random_rgb(rng, top / area, SIZE)
        Image.fromarray(mask).save(HERE / area)


if __name__ == '__main__':
    main()
