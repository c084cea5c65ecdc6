#!/usr/bin/env python3

# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Make a tiny fake ISPRS Potsdam in TorchGeo's layout (run it; it rewrites its files).

``4_Ortho_RGBIR/<tile>_RGBIR.tif`` 4-band (R, G, B, IR) uint8 GeoTIFFs and ``<tile>_label.tif``
RGB colour masks; row ``r`` has the colour of class ``r % 6`` (clutter, impervious surfaces,
building, low vegetation, tree, car).
"""

import shutil
from pathlib import Path

import numpy as np
import rasterio
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
TILES = ('top_potsdam_2_10', 'top_potsdam_2_11', 'top_potsdam_2_12', 'top_potsdam_5_15')


def main() -> None:
    """Write the fake dataset next to this script."""
    rng = np.random.default_rng(0)
    rows = np.arange(SIZE) % len(COLOURS)
    mask = np.array(COLOURS, dtype=np.uint8)[rows][:, None].repeat(SIZE, axis=1)
    shutil.rmtree(HERE / '4_Ortho_RGBIR', ignore_errors=True)
    (HERE / '4_Ortho_RGBIR').mkdir()
    for tile in TILES:
        image = rng.integers(0, 256, (4, SIZE, SIZE), dtype=np.uint8)
        profile = {'driver': 'GTiff', 'dtype': 'uint8', 'count': 4}
        path = HERE / '4_Ortho_RGBIR' / f'{tile}_RGBIR.tif'
        with rasterio.open(path, 'w', width=SIZE, height=SIZE, **profile) as f:
            f.write(image)
        Image.fromarray(mask).save(HERE / f'{tile}_label.tif')


if __name__ == '__main__':
    main()
