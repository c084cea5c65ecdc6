#!/usr/bin/env python3

# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Make a tiny fake DIOR in TorchGeo's layout (run it; it rewrites its files).

``JPEGImages-trainval/<id>.jpg``, PASCAL VOC ``Annotations/<id>.xml`` and ``sample_df.csv``
(``image_path``, ``label_path``, ``split``). Image ``k`` holds one box of class ``k`` and one
of class ``k + 10`` (class names as the XML files spell them).
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))
from fake_files import fresh_folder, save_random_rgb  # noqa: E402

SIZE = 32
HERE = Path(__file__).parent
CLASSES = (
    'airplane airport baseballfield basketballcourt bridge chimney dam expresswayservicearea '
    'expresswaytollstation golffield groundtrackfield harbor overpass ship stadium storagetank '
    'tenniscourt trainstation vehicle windmill'
).split()
#: (class index, xmin, ymin, xmax, ymax) per image: a large box and a small one inside it.
BOXES = [((k, 2, 2, 30, 20), (k + 10, 4, 4, 12, 12)) for k in range(4)]


def main() -> None:
    """Write the fake dataset next to this script."""
    rng = np.random.default_rng(0)
    for folder in ('JPEGImages-trainval', 'Annotations'):
        fresh_folder(HERE / folder)
    rows = ['image_path,label_path,split']
    for i, boxes in enumerate(BOXES):
        stem = f'{i + 1:05d}'
        save_random_rgb(rng, HERE / 'JPEGImages-trainval' / f'{stem}.jpg', SIZE)
        objects = ''.join(
            f'<object><name>{CLASSES[c]}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>'
            f'<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>'
            for c, x0, y0, x1, y1 in boxes
        )
        xml = f'<annotation><filename>{stem}.jpg</filename>{objects}</annotation>\n'
        (HERE / 'Annotations' / f'{stem}.xml').write_text(xml)
        split = 'train' if i < 3 else 'val'
        rows.append(f'JPEGImages-trainval/{stem}.jpg,Annotations/{stem}.xml,{split}')
    (HERE / 'sample_df.csv').write_text('\n'.join(rows) + '\n')


if __name__ == '__main__':
    main()
