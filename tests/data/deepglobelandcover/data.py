#!/usr/bin/env python3

# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Make a tiny fake DeepGlobe Land Cover in TorchGeo's layout (run it; it rewrites ``data/``).

``data/{training,test}_data/images/<id>_sat.jpg`` and ``masks/<id>_mask.png`` RGB colour masks;
row ``r`` of every mask has the colour of class ``r % 7`` (urban, agriculture, rangeland,
forest, water, barren, unknown).
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
    (0, 255, 255),
    (255, 255, 0),
    (255, 0, 255),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 255),
    (0, 0, 0),
)


def main() -> None:
    """Write the fake dataset next to this script."""
    rng = np.random.default_rng(0)
    mask = striped_colour_mask(COLOURS, SIZE)
    fresh_folder(HERE / 'data')
    for folder, ids in (('training_data', (10, 11, 12, 13)), ('test_data', (20, 21))):
        images = fresh_folder(HERE / 'data' / folder / 'images')
        masks = fresh_folder(HERE / 'data' / folder / 'masks')
        for i in ids:
            save_random_rgb(rng, images / f'{i}_sat.jpg', SIZE)
            Image.fromarray(mask).save(masks / f'{i}_mask.png')


if __name__ == '__main__':
    main()
