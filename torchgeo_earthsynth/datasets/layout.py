# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Reading and writing the EarthSynth-180K on-disk layout (images, masks, JSONL)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final

import numpy as np
from PIL import Image

from ..vocabulary import NUM_CLASSES, VOCABULARY, prompt_from_ids

IMAGES: Final = 'images'
MASKS: Final = 'masks'
CATEGORY_IMAGES: Final = 'category_images'
CATEGORY_MASKS: Final = 'category_masks'
REQUIRED_FIELDS: Final = ('file_name', 'mask_name', 'text')


def jsonl_path(split_dir: Path) -> Path:
    """``<split>/<split>.jsonl``, as released."""
    return split_dir / f'{split_dir.name}.jsonl'


def category_stem(stem: str, class_id: int) -> str:
    """File stem of a single-category record (spaces in class names become ``-``)."""
    return f'{stem}_{VOCABULARY[class_id].replace(" ", "-")}'


def atomic_write_png(array: np.ndarray, path: Path) -> None:
    """Write a PNG through a temporary file and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.stem}.', suffix='.png.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            Image.fromarray(array).save(f, format='PNG')
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def category_records(
    split_dir: Path, stem: str, image: np.ndarray, mask: np.ndarray, write: bool = True
) -> list[dict[str, Any]]:
    """Category augmentation: one single-category sample per class in ``mask``.

    The category mask keeps the class id where the class is and 0 elsewhere; the category
    image keeps the image's pixels there and is black elsewhere.

    Args:
        split_dir: the split folder records are relative to.
        stem: the full sample's file stem.
        image: uint8 [H, W, 3].
        mask: uint8 [H, W] class-index mask.
        write: write the PNGs (False only computes records).

    Returns:
        JSONL records of the single-category samples.
    """
    records = []
    for class_id in np.unique(mask).tolist():
        if class_id == 0:
            continue
        keep = mask == class_id
        name = category_stem(stem, class_id)
        if write:
            atomic_write_png(np.where(keep[..., None], image, 0).astype(np.uint8),
                             split_dir / CATEGORY_IMAGES / f'{name}.png')
            atomic_write_png(np.where(keep, mask, 0).astype(np.uint8),
                             split_dir / CATEGORY_MASKS / f'{name}.png')
        records.append({
            'file_name': f'{CATEGORY_IMAGES}/{name}.png',
            'mask_name': f'{CATEGORY_MASKS}/{name}.png',
            'text': prompt_from_ids([class_id]),
        })  # fmt: skip
    return records


def write_sample(
    split_dir: Path, stem: str, image: np.ndarray, mask: np.ndarray, categories: bool = True
) -> list[dict[str, Any]]:
    """Write one full sample (and its category samples) and return its JSONL records.

    Args:
        split_dir: e.g. ``<root>/train``.
        stem: file stem, carrying the source prefix (``DG_``, ``LD_``...).
        image: uint8 [H, W, 3].
        mask: uint8 [H, W] with vocabulary ids.
        categories: also write the single-category samples.

    Returns:
        The full record first, then the category records.

    Raises:
        ValueError: if shapes or ids are wrong.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != mask.shape:
        raise ValueError(f'{stem}: expected image [H,W,3] and mask [H,W], '
                         f'got {image.shape} and {mask.shape}')
    if mask.size and int(mask.max()) >= NUM_CLASSES:
        raise ValueError(f'{stem}: mask id {int(mask.max())} outside [0, {NUM_CLASSES - 1}]')
    image = np.ascontiguousarray(image, dtype=np.uint8)
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    atomic_write_png(image, split_dir / IMAGES / f'{stem}.png')
    atomic_write_png(mask, split_dir / MASKS / f'{stem}.png')
    cats = category_records(split_dir, stem, image, mask, write=True) if categories else []
    full = {
        'file_name': f'{IMAGES}/{stem}.png',
        'mask_name': f'{MASKS}/{stem}.png',
        'text': prompt_from_ids(np.unique(mask).tolist()),
        'category_masks': [r['mask_name'] for r in cats],
    }
    return [full, *cats]


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Atomically write JSONL records; returns how many were written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp')
    n = 0
    with tmp.open('w') as f:
        for record in records:
            f.write(json.dumps(record) + '\n')
            n += 1
    os.replace(tmp, path)
    return n


def augment_split(split_dir: Path) -> int:
    """Category-augment a split that only has ``images/`` and ``masks/``; write its JSONL.

    Used after downloading the released archives and by the corpus builder.

    Returns:
        The number of JSONL records written.
    """
    records: list[dict[str, Any]] = []
    for mask_path in sorted((split_dir / MASKS).glob('*.png')):
        image_path = split_dir / IMAGES / mask_path.name
        if not image_path.exists():
            raise ValueError(f'{mask_path}: no matching image {image_path}')
        image = np.asarray(Image.open(image_path).convert('RGB'))
        mask = np.asarray(Image.open(mask_path))
        mask = mask[..., 0] if mask.ndim == 3 else mask
        cats = category_records(split_dir, mask_path.stem, image, mask)
        records.append({
            'file_name': f'{IMAGES}/{mask_path.name}',
            'mask_name': f'{MASKS}/{mask_path.name}',
            'text': prompt_from_ids(np.unique(mask).tolist()),
            'category_masks': [r['mask_name'] for r in cats],
        })  # fmt: skip
        records.extend(cats)
    return write_jsonl(jsonl_path(split_dir), records)


def iter_jsonl(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, text)`` of non-empty lines, 1-based."""
    with path.open() as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                yield number, line
