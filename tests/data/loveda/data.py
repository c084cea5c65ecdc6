#!/usr/bin/env python3

# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Make a tiny fake LoveDA in TorchGeo's layout (run it; it rewrites the folders next to it).

``<Split>/<Scene>/images_png/<n>.png`` RGB and ``masks_png/<n>.png`` single-channel raw values:
0 no-data, 1 background, 2 building, 3 road, 4 water, 5 barren, 6 forest, 7 agriculture. Row
``r`` of every mask holds value ``r % 8``, so each value sits at known pixels.
"""

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32
HERE = Path(__file__).parent


def main() -> None:
    """Write the fake dataset next to this script."""
    rng = np.random.default_rng(0)
    mask = np.repeat((np.arange(SIZE) % 8)[:, None], SIZE, axis=1).astype(np.uint8)
    for split in ('Train', 'Val', 'Test'):
        shutil.rmtree(HERE / split, ignore_errors=True)
        for scene in ('Urban', 'Rural'):
            for n in range(2):
                image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
                folder = HERE / split / scene
                (folder / 'images_png').mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(folder / 'images_png' / f'{n}.png')
                if split != 'Test':
                    (folder / 'masks_png').mkdir(exist_ok=True)
                    Image.fromarray(mask).save(folder / 'masks_png' / f'{n}.png')


if __name__ == '__main__':
    main()
