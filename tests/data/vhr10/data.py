#!/usr/bin/env python3

# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Make a tiny fake NWPU VHR-10 in TorchGeo's layout (run it; it rewrites its files).

``NWPU VHR-10 dataset/positive image set/<nnn>.jpg``, a COCO ``annotations.json`` (category
ids 1..10, box and polygon per object) and an empty ``NWPU VHR-10 dataset.zip`` (TorchGeo
checks the archive exists). Image ``k`` holds one box of category ``k % 5 + 1`` and one of
``k % 5 + 6``. Eight images, so TorchGeo's default 60/20/20 split leaves five for training: one
batch of 4 (its train loader drops the last incomplete batch).
"""

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32
HERE = Path(__file__).parent
FOLDER = HERE / 'NWPU VHR-10 dataset'
#: (category id, x, y, width, height) per image.
BOXES = [((k % 5 + 1, 2, 2, 28, 18), (k % 5 + 6, 4, 4, 8, 8)) for k in range(8)]


def main() -> None:
    """Write the fake dataset next to this script."""
    rng = np.random.default_rng(0)
    shutil.rmtree(FOLDER, ignore_errors=True)
    (FOLDER / 'positive image set').mkdir(parents=True)
    (FOLDER / 'negative image set').mkdir()
    (HERE / 'NWPU VHR-10 dataset.zip').write_bytes(b'')
    images, annotations = [], []
    for i, boxes in enumerate(BOXES):
        image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(image).save(FOLDER / 'positive image set' / f'{i + 1:03d}.jpg')
        images.append({'id': i, 'file_name': f'{i + 1:03d}.jpg', 'height': SIZE, 'width': SIZE})
        for c, x, y, w, h in boxes:
            polygon = [x, y, x + w, y, x + w, y + h, x, y + h]
            annotations.append(
                {
                    'id': len(annotations),
                    'image_id': i,
                    'category_id': c,
                    'bbox': [x, y, w, h],
                    'area': w * h,
                    'iscrowd': 0,
                    'segmentation': [polygon],
                }
            )
    categories = [{'id': c, 'name': str(c)} for c in range(1, 11)]
    coco = {'images': images, 'annotations': annotations, 'categories': categories}
    (FOLDER / 'annotations.json').write_text(json.dumps(coco))


if __name__ == '__main__':
    main()
