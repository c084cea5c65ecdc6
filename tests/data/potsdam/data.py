#!/usr/bin/env python3

# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Make a tiny fake ISPRS Potsdam in TorchGeo's layout (run it; it rewrites its files).

``4_Ortho_RGBIR/<tile>_RGBIR.tif`` 4-band (R, G, B, IR) uint8 GeoTIFFs and ``<tile>_label.tif``
RGB colour masks; row ``r`` has the colour of class ``r % 6`` (clutter, impervious surfaces,
building, low vegetation, tree, car).
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parents[1]))
from fake_files import fresh_folder, striped_colour_mask, write_geotiff  # noqa: E402

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
TILES = ('top_potsdam_2_10', 'top_potsdam_2_11', 'top_potsdam_2_12', 'top_potsdam_5_15')


def main() -> None:
    """Write the fake dataset next to this script."""
    rng = np.random.default_rng(0)
    mask = striped_colour_mask(COLOURS, SIZE)
    images = fresh_folder(HERE / '4_Ortho_RGBIR')
    for tile in TILES:
        image = rng.integers(0, 256, (4, SIZE, SIZE), dtype=np.uint8)
        write_geotiff(images / f'{tile}_RGBIR.tif', image)
        Image.fromarray(mask).save(HERE / f'{tile}_label.tif')


if __name__ == '__main__':
    main()
