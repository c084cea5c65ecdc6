# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The EarthSynth-180K class vocabulary, prompt template, palette and label maps."""

from __future__ import annotations

import colorsys
from collections.abc import Iterable, Mapping
from typing import Final

import numpy as np
import torch
from torch import Tensor

#: Class names; the index is the pixel value in EarthSynth-180K masks.
VOCABULARY: Final[tuple[str, ...]] = (
    'background',
    # 1-11 land cover
    'bare land',
    'grass',
    'pavement',
    'road',
    'tree',
    'water',
    'agriculture land',
    'building',
    'forest land',
    'barren land',
    'urban land',
    # 12-39 objects
    'large vehicle',
    'swimming pool',
    'helicopter',
    'bridge',
    'plane',
    'ship',
    'soccer ball field',
    'basketball court',
    'ground track field',
    'small vehicle',
    'baseball diamond',
    'tennis court',
    'roundabout',
    'storage tank',
    'harbor',
    'container crane',
    'airport',
    'helipad',
    'chimney',
    'expressway service area',
    'expressway toll station',
    'dam',
    'golf field',
    'overpass',
    'stadium',
    'train station',
    'vehicle',
    'windmill',
    # 40-66 fine-grained FAIR1M types
    'A220',
    'A321',
    'A330',
    'A350',
    'ARJ21',
    'Boeing737',
    'Boeing747',
    'Boeing777',
    'Boeing787',
    'bus',
    'C919',
    'cargo truck',
    'dry cargo ship',
    'dump truck',
    'engineering ship',
    'excavator',
    'fishing boat',
    'intersection',
    'liquid cargo ship',
    'motorboat',
    'passenger ship',
    'tractor',
    'trailer',
    'truck tractor',
    'tugboat',
    'van',
    'warship',
)

NUM_CLASSES: Final[int] = len(VOCABULARY)
BACKGROUND: Final[int] = 0
PROMPT_PREFIX: Final[str] = 'A satellite image of '
CLASS_IDS: Final[Mapping[str, int]] = {name: i for i, name in enumerate(VOCABULARY)}

#: File-stem prefix -> source dataset (checked in order; longest prefixes first).
SOURCE_PREFIXES: Final[tuple[tuple[str, str], ...]] = (
    ('FAST_', 'FAIR1M'),
    ('SIOR_', 'DIOR'),
    ('SOTA_', 'DOTA'),
    ('DG_', 'DeepGlobe'),
    ('LD_', 'LoveDA'),
    ('OEM', 'OpenEarthMap'),
)
SOURCES: Final[tuple[str, ...]] = (*(s for _, s in SOURCE_PREFIXES), 'other')


def _make_palette() -> np.ndarray:
    """A fixed, readable colour per class: hand-picked land cover, evenly spread hues after."""
    land_cover = [
        (0, 0, 0),
        (180, 150, 110),
        (130, 200, 90),
        (160, 160, 160),
        (240, 240, 240),
        (40, 140, 40),
        (30, 90, 220),
        (230, 210, 90),
        (220, 60, 60),
        (0, 90, 30),
        (140, 100, 60),
        (200, 120, 200),
    ]
    others = []
    n = NUM_CLASSES - len(land_cover)
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.65 + 0.35 * (i % 2), 0.95)
        others.append((round(r * 255), round(g * 255), round(b * 255)))
    return np.array(land_cover + others, dtype=np.uint8)


#: RGB display colour per class id, shape [67, 3], uint8.
PALETTE: Final[np.ndarray] = _make_palette()


def class_names(ids: Iterable[int]) -> list[str]:
    """Names of the given ids, ascending, background excluded.

    Args:
        ids: vocabulary ids (duplicates allowed).

    Returns:
        Sorted class names.

    Raises:
        ValueError: if an id is outside the vocabulary.
    """
    unique = sorted({int(i) for i in ids})
    bad = [i for i in unique if not 0 <= i < NUM_CLASSES]
    if bad:
        raise ValueError(f'class ids {bad} are outside the vocabulary [0, {NUM_CLASSES - 1}]')
    return [VOCABULARY[i] for i in unique if i != BACKGROUND]


def prompt_from_ids(ids: Iterable[int]) -> str:
    """The EarthSynth prompt for a set of class ids.

    Args:
        ids: vocabulary ids present in a mask.

    Returns:
        ``"A satellite image of c1, c2"`` with names ascending by id, background excluded.
    """
    return PROMPT_PREFIX + ', '.join(class_names(ids))


def present_ids(mask: Tensor | np.ndarray) -> list[int]:
    """Sorted ids present in a mask (background included if present).

    Args:
        mask: class-index mask of any shape.

    Returns:
        The distinct values, ascending.
    """
    if isinstance(mask, Tensor):
        return [int(i) for i in torch.unique(mask).tolist()]
    if mask.dtype.kind == 'u':  # a count per value is faster than sorting (np.unique)
        return [int(i) for i in np.flatnonzero(np.bincount(mask.ravel()))]
    return [int(i) for i in np.unique(mask).tolist()]


def prompt_from_mask(mask: Tensor | np.ndarray) -> str:
    """The EarthSynth prompt derived from a class-index mask.

    Args:
        mask: class-index mask with vocabulary ids.

    Returns:
        The template prompt naming the classes present (see :func:`prompt_from_ids`).
    """
    return prompt_from_ids(present_ids(mask))


def ids_from_prompt(prompt: str) -> list[int]:
    """Parse a template prompt back into ids (inverse of :func:`prompt_from_ids`).

    Args:
        prompt: a prompt made by :func:`prompt_from_ids`.

    Returns:
        The distinct ids named, ascending (background never appears).

    Raises:
        ValueError: if the prompt does not follow the template or names an unknown class.
    """
    if not prompt.startswith(PROMPT_PREFIX):
        raise ValueError(f'prompt {prompt!r} does not start with {PROMPT_PREFIX!r}')
    body = prompt[len(PROMPT_PREFIX) :].strip()
    if not body:
        return []
    ids = []
    for name in body.split(', '):
        if name not in CLASS_IDS:
            raise ValueError(f'prompt {prompt!r} names {name!r}, which is not in the vocabulary')
        ids.append(CLASS_IDS[name])
    return sorted(set(ids))


def class_histogram(masks: Tensor, num_classes: int = NUM_CLASSES) -> Tensor:
    """Pixels of each class id per mask: the one class histogram of the package.

    Args:
        masks: integer masks [N, ...] (a batch; pass ``mask[None]`` for one mask).
        num_classes: number of class ids (the vocabulary's by default).

    Returns:
        int64 [N, num_classes] on the masks' device.

    Raises:
        ValueError: if a mask holds an id outside ``[0, num_classes)``.
    """
    flat = masks.flatten(1).long() if masks.ndim > 1 else masks.long()[:, None]
    if flat.numel():
        low, high = (int(v) for v in flat.aminmax())
        if low < 0 or high >= num_classes:
            what = 'vocabulary' if num_classes == NUM_CLASSES else 'class'
            raise ValueError(
                f'mask ids span [{low}, {high}]; expected {what} ids in [0, {num_classes - 1}]'
            )
    # one bincount over (mask, id) pairs
    offsets = torch.arange(flat.shape[0], device=flat.device)[:, None] * num_classes
    counts = torch.bincount((flat + offsets).flatten(), minlength=flat.shape[0] * num_classes)
    return counts.view(flat.shape[0], num_classes)


def multi_hot(mask: Tensor) -> Tensor:
    """Multi-hot float32 vector [67] of the ids present in a mask (background included).

    Args:
        mask: integer class-index mask of any shape.

    Returns:
        float32 tensor [67] with 1 where the id occurs.

    Raises:
        ValueError: if the mask holds an id outside ``[0, 66]``.
    """
    return (class_histogram(mask.reshape(1, -1))[0] > 0).float()


def source_from_stem(stem: str) -> str:
    """The source dataset named by a file stem's prefix.

    Args:
        stem: file stem such as ``DG_629683_0`` or ``OEMxBD_coxsbazar_56_2``.

    Returns:
        One of :data:`SOURCES`; ``'other'`` for an unknown prefix.
    """
    for prefix, source in SOURCE_PREFIXES:
        if stem.startswith(prefix):
            return source
    return 'other'


def colorize(mask: Tensor | np.ndarray) -> np.ndarray:
    """Render a class-index mask with :data:`PALETTE`.

    Args:
        mask: class-index mask [H, W]; ids outside the vocabulary are clipped.

    Returns:
        RGB uint8 array [H, W, 3].
    """
    array = mask.cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask)
    rgb: np.ndarray = PALETTE[np.clip(array, 0, NUM_CLASSES - 1)]
    return rgb


__all__ = (
    'BACKGROUND',
    'CLASS_IDS',
    'NUM_CLASSES',
    'PALETTE',
    'PROMPT_PREFIX',
    'SOURCES',
    'SOURCE_PREFIXES',
    'VOCABULARY',
    'class_histogram',
    'class_names',
    'colorize',
    'ids_from_prompt',
    'multi_hot',
    'present_ids',
    'prompt_from_ids',
    'prompt_from_mask',
    'source_from_stem',
)
