#!/usr/bin/env python3

# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Make a tiny fake NWPU VHR-10 in TorchGeo's layout (run it; it rewrites its files).

``NWPU VHR-10 dataset/positive image set/<nnn>.jpg``, a COCO ``annotations.json`` (images with
0-based ids, file names and sizes; category ids 1..10; a box and a polygon per object) and an
empty ``NWPU VHR-10 dataset.zip`` (TorchGeo checks the archive exists). TorchGeo 0.8 reads the
annotations with pycocotools, 0.10 with ``json`` and rasterio; both read these files. Image
``k`` holds a large box of category ``k % 10 + 1`` and a small one of ``(k + 5) % 10 + 1``
inside it, so every category appears twice; 10 images leave a training split of 6 (one batch
of 4, as the README's quick start loads).

TorchGeo 0.10 checks the files' SHA-256 by default (0.8: MD5, when asked), which fake files
cannot match: tests patch :func:`checksums` into ``VHR10.image_meta``/``target_meta``.
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))
from fake_files import fresh_folder, save_random_rgb  # noqa: E402

SIZE = 32
HERE = Path(__file__).parent
FOLDER = HERE / 'NWPU VHR-10 dataset'
ARCHIVE = HERE / 'NWPU VHR-10 dataset.zip'
ANNOTATIONS = FOLDER / 'annotations.json'
#: (category id, x, y, width, height) per image: a large box and a small one inside it.
BOXES = [((k % 10 + 1, 2, 2, 28, 18), ((k + 5) % 10 + 1, 4, 4, 8, 8)) for k in range(10)]


def checksums(
    torchgeo_version: tuple[int, int], root: Path = HERE
) -> dict[str, tuple[str, str]]:
    """The digests of the fake files under the names the installed TorchGeo checks.

    Args:
        torchgeo_version: (major, minor) of TorchGeo.
        root: the dataset root holding the fake files (a copy of this folder).

    Returns:
        ``{'image_meta' | 'target_meta': (checksum key, digest)}``: ``sha256`` from
        TorchGeo 0.10, ``md5`` before.
    """
    algorithm = 'sha256' if torchgeo_version >= (0, 10) else 'md5'
    files = {
        'image_meta': root / ARCHIVE.relative_to(HERE),
        'target_meta': root / ANNOTATIONS.relative_to(HERE),
    }
    return {
        meta: (algorithm, hashlib.new(algorithm, path.read_bytes()).hexdigest())
        for meta, path in files.items()
    }


def main() -> None:
    """Write the fake dataset next to this script."""
    rng = np.random.default_rng(0)
    positive = fresh_folder(FOLDER / 'positive image set')
    fresh_folder(FOLDER / 'negative image set')
    ARCHIVE.write_bytes(b'')
    images, annotations = [], []
    for i, boxes in enumerate(BOXES):
        save_random_rgb(rng, positive / f'{i + 1:03d}.jpg', SIZE)
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
    ANNOTATIONS.write_text(json.dumps(coco))


if __name__ == '__main__':
    main()
