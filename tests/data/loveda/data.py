#!/usr/bin/env python3

# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Make a tiny fake LoveDA in TorchGeo's layout (run it; it rewrites the folders next to it).

``<Split>/<Scene>/images_png/<n>.png`` RGB and ``masks_png/<n>.png`` single-channel raw values:
0 no-data, 1 background, 2 building, 3 road, 4 water, 5 barren, 6 forest, 7 agriculture. Row
``r`` of every mask holds value ``r % 8``, so each value sits at known pixels.
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parents[1]))
from fake_files import fresh_folder, save_random_rgb, striped_value_mask  # noqa: E402

SIZE = 32
HERE = Path(__file__).parent


def main() -> None:
    """Write the fake dataset next to this script."""
    rng = np.random.default_rng(0)
    mask = striped_value_mask(8, SIZE)
    for split in ('Train', 'Val', 'Test'):
        fresh_folder(HERE / split)
        for scene in ('Urban', 'Rural'):
            images = fresh_folder(HERE / split / scene / 'images_png')
            masks = fresh_folder(HERE / split / scene / 'masks_png') if split != 'Test' else None
            for n in range(2):
                save_random_rgb(rng, images / f'{n}.png', SIZE)
                if masks is not None:
                    Image.fromarray(mask).save(masks / f'{n}.png')


if __name__ == '__main__':
    main()
