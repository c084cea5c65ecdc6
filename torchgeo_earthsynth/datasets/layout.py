# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Reading and writing the EarthSynth-180K on-disk layout (images, masks, JSONL)."""

from __future__ import annotations

import io
import json
import logging
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final

import numpy as np
from PIL import Image

from torchgeo_earthsynth.atomic import atomic_open, atomic_write_bytes
from torchgeo_earthsynth.vocabulary import NUM_CLASSES, VOCABULARY, present_ids, prompt_from_ids

logger = logging.getLogger(__name__)

IMAGES: Final = 'images'
MASKS: Final = 'masks'
CATEGORY_IMAGES: Final = 'category_images'
CATEGORY_MASKS: Final = 'category_masks'
FOLDERS: Final = (IMAGES, MASKS, CATEGORY_IMAGES, CATEGORY_MASKS)
REQUIRED_FIELDS: Final = ('file_name', 'mask_name', 'text')


def jsonl_path(split_dir: Path) -> Path:
    """The JSONL of a split, ``<split>/<split>.jsonl`` as released.

    Args:
        split_dir: the split folder, e.g. ``<root>/train``.

    Returns:
        The path of its JSONL file (which may not exist).
    """
    return split_dir / f'{split_dir.name}.jsonl'


def category_stem(stem: str, class_id: int) -> str:
    """File stem of a single-category sample, as the released category augmentation names it.

    Args:
        stem: the full sample's file stem.
        class_id: the vocabulary id of the category.

    Returns:
        ``<stem>_<class name with spaces as underscores>``, e.g. ``DG_1_0_forest_land``.
    """
    return f'{stem}_{VOCABULARY[class_id].replace(" ", "_")}'


def png_bytes(array: np.ndarray) -> bytes:
    """A uint8 [H, W] or [H, W, 3] array encoded as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format='PNG')
    return buffer.getvalue()


def atomic_write_png(array: np.ndarray, path: Path) -> None:
    """Write a PNG through a temporary file and rename, so readers never see half a file.

    Args:
        array: uint8 [H, W] or [H, W, 3].
        path: destination.
    """
    atomic_write_bytes(png_bytes(array), path)


def category_records(
    split_dir: Path,
    stem: str,
    image: np.ndarray | Path,
    mask: np.ndarray,
    write: bool = True,
) -> list[dict[str, Any]]:
    """Category augmentation: one single-category sample per class in ``mask``.

    As in the released corpus, the category mask keeps the class id where the class is and 0
    elsewhere, and the category image is a copy of the full image.

    Args:
        split_dir: the split folder records are relative to.
        stem: the full sample's file stem.
        image: uint8 [H, W, 3], or the path of the full image's PNG (copied byte for byte).
        mask: uint8 [H, W] class-index mask.
        write: write the PNGs (False only computes records).

    Returns:
        JSONL records of the single-category samples, ascending by class id.
    """
    records = []
    image_png: bytes | None = None
    for class_id in present_ids(mask):
        if class_id == 0:
            continue
        name = category_stem(stem, class_id)
        image_path = split_dir / CATEGORY_IMAGES / f'{name}.png'
        mask_path = split_dir / CATEGORY_MASKS / f'{name}.png'
        if write:
            if image_png is None:
                image_png = (
                    image.read_bytes()
                    if isinstance(image, Path)
                    else png_bytes(np.ascontiguousarray(image, dtype=np.uint8))
                )
            atomic_write_bytes(image_png, image_path)
            atomic_write_png(np.where(mask == class_id, mask, 0).astype(np.uint8), mask_path)
        records.append(
            {
                'file_name': f'{CATEGORY_IMAGES}/{name}.png',
                'mask_name': f'{CATEGORY_MASKS}/{name}.png',
                'text': prompt_from_ids([class_id]),
            }
        )
    return records


def _full_record(stem: str, mask: np.ndarray, categories: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        'file_name': f'{IMAGES}/{stem}.png',
        'mask_name': f'{MASKS}/{stem}.png',
        'text': prompt_from_ids(present_ids(mask)),
        'category_masks': [r['mask_name'] for r in categories],
    }


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
        raise ValueError(
            f'{stem}: expected image [H,W,3] and mask [H,W], got {image.shape} and {mask.shape}'
        )
    if mask.size and not 0 <= int(mask.min()) <= int(mask.max()) < NUM_CLASSES:
        raise ValueError(
            f'{stem}: mask ids span [{int(mask.min())}, {int(mask.max())}]; expected '
            f'vocabulary ids in [0, {NUM_CLASSES - 1}]'
        )
    image = np.ascontiguousarray(image, dtype=np.uint8)
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    image_path = split_dir / IMAGES / f'{stem}.png'
    atomic_write_png(image, image_path)
    atomic_write_png(mask, split_dir / MASKS / f'{stem}.png')
    cats = category_records(split_dir, stem, image_path, mask) if categories else []
    return [_full_record(stem, mask, cats), *cats]


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Atomically write JSONL records.

    Args:
        path: the JSONL file.
        records: JSON-serialisable dicts, one per line.

    Returns:
        The number of records written.
    """
    n = 0
    with atomic_open(path) as f:
        for record in records:
            f.write((json.dumps(record, ensure_ascii=False) + '\n').encode('utf-8'))
            n += 1
    return n


#: What PIL raises on a damaged, truncated or oversized file.
DECODE_ERRORS: Final = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    zlib.error,
    Image.DecompressionBombError,
)


def open_image(path: str | Path, where: str = '') -> Image.Image:
    """Open an image file lazily (header only), with errors that name the file.

    Args:
        path: the file.
        where: appended to the path in errors, e.g. ``' (from train.jsonl line 3)'``.

    Returns:
        The opened PIL image (use it as a context manager).

    Raises:
        ValueError: if the file is not an image PIL can open, or its header claims more
            pixels than PIL's decompression-bomb limit.
    """
    try:
        return Image.open(path)
    except DECODE_ERRORS as error:
        raise ValueError(f'{path}{where}: cannot open as an image ({error})') from error


def decode_image(
    image: Image.Image, path: str | Path, where: str = '', rgb: bool = False
) -> np.ndarray:
    """Decode an opened image's pixels.

    Args:
        image: from :func:`open_image`.
        path: the file, named in errors.
        where: appended to the path in errors.
        rgb: convert to RGB first.

    Returns:
        The pixels, [H, W] or [H, W, C].

    Raises:
        ValueError: if the pixel data are damaged, truncated or too large to decode.
    """
    try:
        image.load()
        if rgb and image.mode != 'RGB':
            image = image.convert('RGB')
        return np.asarray(image)
    except DECODE_ERRORS as error:
        kind = image.format or 'image'
        raise ValueError(
            f'{path}{where}: cannot decode the {kind} file ({error}); the file is damaged or '
            'truncated'
        ) from error


def require_png(mask: Image.Image, path: str | Path) -> None:
    """Refuse a mask that is not a PNG file (whatever its name says).

    Args:
        mask: from :func:`open_image`.
        path: the file (and where it came from), named in errors.

    Raises:
        ValueError: if the file is not a PNG: lossy formats such as JPEG change class ids.
    """
    if mask.format != 'PNG':
        raise ValueError(
            f'{path}: the mask is a {mask.format or "non-PNG"} file; expected a lossless PNG '
            '(lossy compression such as JPEG changes class ids)'
        )


def read_mask_png(path: Path) -> np.ndarray:
    """Decode a class-index mask PNG.

    Single-channel (``L``, ``P``, ``I``) masks are taken as they are; a 3- or 4-channel mask
    must have equal colour channels (see :func:`check_mask`).

    Args:
        path: the mask PNG.

    Returns:
        The mask [H, W] (uint8 unless the PNG holds wider integers).

    Raises:
        ValueError: naming the file, if it cannot be decoded, is not a PNG, has unequal
            colour channels, or holds an id outside the vocabulary.
    """
    try:
        img = Image.open(path)
    except DECODE_ERRORS as error:
        raise ValueError(f'{path}: cannot decode the mask PNG ({error})') from error
    with img:
        require_png(img, path)
        try:
            mask = np.asarray(img)
        except DECODE_ERRORS as error:
            raise ValueError(f'{path}: cannot decode the mask PNG ({error})') from error
    return check_mask(mask, path)


def check_mask(mask: np.ndarray, path: Path | str) -> np.ndarray:
    """Reduce a decoded mask to [H, W] and check its ids.

    Args:
        mask: the decoded PNG, [H, W] or [H, W, C].
        path: named in errors.

    Returns:
        The class-index mask [H, W].

    Raises:
        ValueError: if a multi-channel mask's colour channels differ, its alpha channel (grey
            or RGB + alpha) is not opaque, or an id is outside ``[0, 66]``.
    """
    channels = mask.shape[2] if mask.ndim == 3 else 1
    if channels in (2, 4) and np.issubdtype(mask.dtype, np.integer):  # grey or RGB + alpha
        if not (mask[..., -1] == np.iinfo(mask.dtype).max).all():
            raise ValueError(
                f'{path}: the mask has transparent pixels (alpha below opaque); expected an '
                'opaque class-index mask (one vocabulary id per pixel)'
            )
        mask = mask[..., :-1]
    if mask.ndim == 3:
        if not (mask == mask[..., :1]).all():
            raise ValueError(
                f'{path}: a {channels}-channel mask must have equal colour channels; '
                'expected a class-index mask (one vocabulary id per pixel)'
            )
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise ValueError(f'{path}: expected a mask [H, W], got shape {mask.shape}')
    if mask.dtype != bool and not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f'{path}: mask of {mask.dtype} values; expected integer class ids')
    if mask.size:
        low = 0 if mask.dtype == np.uint8 else int(mask.min())
        high = int(mask.max())
        if not 0 <= low <= high < NUM_CLASSES:
            raise ValueError(
                f'{path}: mask ids span [{low}, {high}]; expected vocabulary ids in '
                f'[0, {NUM_CLASSES - 1}]'
            )
    return mask


def augment_split(split_dir: Path, strict: bool = True) -> int:
    """Category-augment a split that only has ``images/`` and ``masks/``; write its JSONL.

    Used after downloading the released archives and by the corpus builder. Only the masks
    are decoded; category images are byte copies of the full images.

    Args:
        split_dir: the split folder, e.g. ``<root>/train``.
        strict: raise on a bad pair; if False, log it and leave it out of the JSONL.

    Returns:
        The number of JSONL records written.

    Raises:
        ValueError: when ``strict``, if a mask has no image of the same name and size or
            cannot be read.
    """
    records: list[dict[str, Any]] = []
    skipped = 0
    for mask_path in sorted((split_dir / MASKS).glob('*.png')):
        image_path = split_dir / IMAGES / mask_path.name
        try:
            if not image_path.is_file():
                raise ValueError(f'{mask_path}: no matching image {image_path}')
            mask = read_mask_png(mask_path)
            with open_image(image_path) as img:
                size = img.size
            if size != (mask.shape[1], mask.shape[0]):
                raise ValueError(
                    f'{image_path} is {size[0]}x{size[1]} but {mask_path} is '
                    f'{mask.shape[1]}x{mask.shape[0]}; expected equal sizes'
                )
        except ValueError as error:
            if strict:
                raise
            skipped += 1
            logger.warning('augment_split: leaving out %s', error)
            continue
        cats = category_records(split_dir, mask_path.stem, image_path, mask)
        records += [_full_record(mask_path.stem, mask, cats), *cats]
    if skipped:
        logger.warning('augment_split(%s): left out %d bad pair(s)', split_dir, skipped)
    return write_jsonl(jsonl_path(split_dir), records)


def iter_jsonl(path: Path) -> Iterator[tuple[int, str]]:
    """Yield the non-empty lines of a JSONL file.

    Args:
        path: the JSONL file (UTF-8, with or without a byte-order mark).

    Yields:
        ``(line number, text)``, numbered from 1; undecodable bytes become U+FFFD.

    Raises:
        ValueError: if the path is a directory or cannot be read.
    """
    if path.is_dir():
        raise ValueError(f'{path} is a directory; expected a JSONL file (one JSON record per line)')
    try:
        with path.open(encoding='utf-8-sig', errors='replace') as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    yield number, line
    except OSError as error:
        raise ValueError(f'{path}: cannot read the JSONL file ({error})') from error
