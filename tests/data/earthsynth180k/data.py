#!/usr/bin/env python3

# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Make a tiny fake EarthSynth-180K: an extracted corpus and a fake Hugging Face repo.

Run from anywhere: ``python tests/data/earthsynth180k/data.py``. It rewrites, next to itself,

* ``train/``: images, masks, category_images, category_masks and ``train.jsonl`` as the
  released category augmentation makes them (category images are copies of the full image,
  category masks keep the class id, names ``<stem>_<class_with_underscores>``); one record
  uses the authors' path form ``./data/EarthSynth-180K/train/...``;
* ``val/``: images and masks only (no JSONL), one mask saved as RGB with equal channels;
* ``hub/``: the fake dataset repo: ``train.zip.part00..02`` (zip of ``train/images`` and
  ``train/masks``) and ``val.zip_part_aa/ab`` (zip of ``images/`` and ``masks/`` at its top).

Only numpy, Pillow and the standard library are used, so the fake does not depend on the
writer under test. Output is byte-for-byte deterministic.
"""

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32
#: stem -> classes painted as horizontal bands (vocabulary ids; 0 background)
TRAIN = {
    'DG_629683_0': [7, 9, 6],  # agriculture land, forest land, water
    'LD_300_0': [0, 8, 4],  # background, building, road
    'OEMxBD_coxsbazar_56_2': [2, 5, 1, 11],  # grass, tree, bare land, urban land
    'FAST_train_5093_0001_0': [3, 21, 12, 40],  # pavement, small vehicle, large vehicle, A220
}
VAL = {
    'SIOR_07349_0': [3, 22, 38],  # pavement, baseball diamond, vehicle
    'SOTA_0001_0': [6, 17, 66, 39],  # water, ship, warship, windmill
}
NAMES = {
    0: 'background', 1: 'bare land', 2: 'grass', 3: 'pavement', 4: 'road', 5: 'tree',
    6: 'water', 7: 'agriculture land', 8: 'building', 9: 'forest land', 11: 'urban land',
    12: 'large vehicle', 17: 'ship', 21: 'small vehicle', 22: 'baseball diamond',
    38: 'vehicle', 39: 'windmill', 40: 'A220', 66: 'warship',
}
DATE = (2025, 8, 7, 0, 0, 0)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format='PNG')
    return buffer.getvalue()


def scene(seed: int, classes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    bands = np.array_split(np.arange(SIZE), len(classes))
    for rows, class_id in zip(bands, classes):
        mask[rows] = class_id
    colours = np.zeros((256, 3), dtype=np.int64)
    colours[classes] = rng.integers(16, 240, size=(len(classes), 3))
    image = colours[mask] + rng.integers(-8, 9, size=(SIZE, SIZE, 3))
    return np.clip(image, 0, 255).astype(np.uint8), mask


def prompt(ids: list[int]) -> str:
    return 'A satellite image of ' + ', '.join(NAMES[i] for i in sorted(set(ids)) if i)


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w', zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            zf.writestr(zipfile.ZipInfo(name, date_time=DATE), files[name])
    return buffer.getvalue()


def split_parts(data: bytes, n: int) -> list[bytes]:
    step = -(-len(data) // n)
    return [data[i : i + step] for i in range(0, len(data), step)]


def make_fake_data(root: Path) -> None:
    """Write the fake corpus (train/, val/) and the fake hub repo (hub/) under ``root``."""
    for name in ('train', 'val', 'hub'):
        shutil.rmtree(root / name, ignore_errors=True)

    train_files: dict[str, bytes] = {}
    records = []
    for seed, (stem, classes) in enumerate(TRAIN.items()):
        image, mask = scene(seed, classes)
        image_png = png(image)
        train_files[f'train/images/{stem}.png'] = image_png
        train_files[f'train/masks/{stem}.png'] = png(mask)
        category = []
        for class_id in sorted(set(classes) - {0}):
            name = f'{stem}_{NAMES[class_id].replace(" ", "_")}'
            write(root / 'train' / 'category_images' / f'{name}.png', image_png)
            write(
                root / 'train' / 'category_masks' / f'{name}.png',
                png(np.where(mask == class_id, mask, 0).astype(np.uint8)),
            )
            category.append({
                'file_name': f'category_images/{name}.png',
                'mask_name': f'category_masks/{name}.png',
                'text': prompt([class_id]),
            })
        prefix = './data/EarthSynth-180K/train/' if stem.startswith('LD_') else ''
        records.append({
            'file_name': f'{prefix}images/{stem}.png',
            'mask_name': f'{prefix}masks/{stem}.png',
            'text': prompt(classes),
            'category_masks': [r['mask_name'] for r in category],
        })
        records += category
    for name, data in train_files.items():
        write(root / name, data)
    jsonl = ''.join(json.dumps(r) + '\n' for r in records)
    (root / 'train' / 'train.jsonl').write_text(jsonl)

    val_files: dict[str, bytes] = {}
    for seed, (stem, classes) in enumerate(VAL.items(), start=len(TRAIN)):
        image, mask = scene(seed, classes)
        # the last mask as RGB with equal channels, which readers must accept
        mask_array = np.repeat(mask[..., None], 3, axis=2) if stem.startswith('SOTA_') else mask
        val_files[f'images/{stem}.png'] = png(image)
        val_files[f'masks/{stem}.png'] = png(mask_array)
    for name, data in val_files.items():
        write(root / 'val' / name, data)

    hub = root / 'hub'
    hub.mkdir()
    (hub / 'README.md').write_text('# Fake EarthSynth-180K\n\n`cat train.zip.part* > train.zip`\n')
    for i, part in enumerate(split_parts(zip_bytes(train_files), 3)):
        (hub / f'train.zip.part{i:02d}').write_bytes(part)
    for suffix, part in zip(('aa', 'ab'), split_parts(zip_bytes(val_files), 2)):
        (hub / f'val.zip_part_{suffix}').write_bytes(part)


if __name__ == '__main__':
    make_fake_data(Path(__file__).resolve().parent)
