#!/usr/bin/env python3

# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Make a tiny fake DeepGlobe Land Cover in TorchGeo's layout (run it; it rewrites ``data/``).

``data/{training,test}_data/images/<id>_sat.jpg`` and ``masks/<id>_mask.png`` RGB colour masks;
row ``r`` of every mask has the colour of class ``r % 7`` (urban, agriculture, rangeland,
forest, water, barren, unknown).
"""

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

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
    rows = np.arange(SIZE) % len(COLOURS)
    mask = np.array(COLOURS, dtype=np.uint8)[rows][:, None].repeat(SIZE, axis=1)
    shutil.rmtree(HERE / 'data', ignore_errors=True)
    for folder, ids in (('training_data', (10, 11, 12, 13)), ('test_data', (20, 21))):
        (HERE / 'data' / folder / 'images').mkdir(parents=True)
        (HERE / 'data' / folder / 'masks').mkdir()
        for i in ids:
            image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            Image.fromarray(image).save(HERE / 'data' / folder / 'images' / f'{i}_sat.jpg')
            Image.fromarray(mask).save(HERE / 'data' / folder / 'masks' / f'{i}_mask.png')


if __name__ == '__main__':
    main()
