# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""EarthSynthMini: a small procedural corpus in the EarthSynth-180K layout."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from torchgeo_earthsynth.atomic import atomic_directory
from torchgeo_earthsynth.cache import default_cache_dir
from torchgeo_earthsynth.conditions import METADATA_FIELDS
from torchgeo_earthsynth.datasets import layout
from torchgeo_earthsynth.datasets.earthsynth180k import EarthSynth180K
from torchgeo_earthsynth.vocabulary import CLASS_IDS, present_ids

#: Bump when the renderer changes, so stale caches are not reused.
MINI_VERSION: Final = 3

C = CLASS_IDS
#: Scene recipe per source prefix: base class, blob classes, and which structures appear.
_SCENES: Final[dict[str, dict[str, Any]]] = {
    'DG_': {
        'base': C['agriculture land'],
        'blobs': [C['forest land'], C['water']],
        'fields': True,
        'roads': 0.3,
        'buildings': 0,
        'vehicles': 0,
        'tanks': 0,
    },
    'LD_': {
        'base': C['background'],
        'blobs': [C['water'], C['forest land']],
        'fields': False,
        'roads': 1.0,
        'buildings': 6,
        'vehicles': 0,
        'tanks': 0,
    },
    'OEM_': {
        'base': C['grass'],
        'blobs': [C['tree'], C['bare land']],
        'fields': False,
        'roads': 0.8,
        'buildings': 4,
        'vehicles': 0,
        'tanks': 0,
    },
    'SIOR_': {
        'base': C['pavement'],
        'blobs': [C['grass']],
        'fields': False,
        'roads': 1.0,
        'buildings': 2,
        'vehicles': 6,
        'tanks': 2,
    },
}

#: Mean RGB colour of each rendered class.
_COLOURS: Final[dict[int, tuple[int, int, int]]] = {
    C['background']: (120, 110, 95),
    C['bare land']: (175, 150, 115),
    C['grass']: (110, 160, 70),
    C['pavement']: (150, 150, 145),
    C['road']: (90, 90, 95),
    C['tree']: (50, 110, 45),
    C['water']: (35, 65, 120),
    C['agriculture land']: (170, 165, 80),
    C['building']: (185, 75, 60),
    C['forest land']: (25, 75, 35),
    C['small vehicle']: (235, 235, 240),
    C['storage tank']: (225, 225, 215),
}

#: Per-source "sensor" colour response (channel gains) so sources differ in appearance.
_SENSOR: Final[dict[str, tuple[float, float, float]]] = {
    'DG_': (1.05, 1.0, 0.9),
    'LD_': (0.95, 1.0, 1.08),
    'OEM_': (1.1, 1.08, 1.0),
    'SIOR_': (0.92, 0.92, 0.92),
}


#: Each source's nominal GSD (m/px); a scene's GSD varies around it and scales its objects.
_SOURCE_GSD: Final[dict[str, float]] = {'DG_': 0.5, 'LD_': 0.3, 'OEM_': 0.5, 'SIOR_': 0.5}

#: Vegetation colours in the depth of winter (summer colours are :data:`_COLOURS`).
_WINTER: Final[dict[int, tuple[int, int, int]]] = {
    C['grass']: (150, 135, 90),
    C['tree']: (85, 80, 60),
    C['forest land']: (60, 60, 50),
    C['agriculture land']: (165, 135, 95),
}


#: Long-tailed variant: the share of training scenes allowed to hold each rare class (the rest of a
#: scene's recipe is unchanged), so a few labelled scenes miss them, as in EarthSynth-180K.
LONG_TAIL_SHARES: Final[dict[int, float]] = {
    C['building']: 0.1,
    C['water']: 0.12,
    C['small vehicle']: 0.1,
    C['storage tank']: 0.1,
}


def _long_tail_recipe(rng: np.random.Generator, prefix: str) -> dict[str, Any]:
    """The scene recipe of ``prefix`` with each rare class kept at its long-tail share."""
    scene = dict(_SCENES[prefix])
    allowed = {cls for cls, share in LONG_TAIL_SHARES.items() if rng.random() < share}
    scene['blobs'] = [
        cls for cls in scene['blobs'] if cls not in LONG_TAIL_SHARES or cls in allowed
    ]
    for key, cls in (('buildings', 'building'), ('vehicles', 'small vehicle')):
        if C[cls] not in allowed:
            scene[key] = 0
    if C['storage tank'] not in allowed:
        scene['tanks'] = 0
    return scene


#: Latitudes (degrees) the mini corpus's scenes are drawn from by default.
DEFAULT_LATITUDES: Final = (-60.0, 60.0)


def _scene_metadata(
    rng: np.random.Generator, prefix: str, latitudes: tuple[float, float]
) -> dict[str, float | int]:
    """A scene's place, resolution and date (JSONL ``metadata`` object, physical units)."""
    values: dict[str, float | int] = {
        'lon': round(float(rng.uniform(-180, 180)), 4),
        'lat': round(float(rng.uniform(*latitudes)), 4),
        'gsd': round(_SOURCE_GSD[prefix] * float(rng.uniform(0.6, 1.6)), 3),
        'cloud_cover': 0.0,
        'year': int(rng.integers(2015, 2024)),
        'month': int(rng.integers(1, 13)),
        'day': int(rng.integers(1, 29)),
    }
    return values


def greenness(month: float, lat: float) -> float:
    """Vegetation's seasonal green in the mini corpus: 1 at midsummer, 0 at midwinter.

    Args:
        month: month 1..12.
        lat: latitude (degrees); the seasons are swapped south of the equator.

    Returns:
        A weight in [0, 1] between the winter and summer vegetation colours.
    """
    phase = month - 7 if lat >= 0 else month - 1
    return 0.5 + 0.5 * float(np.cos(2 * np.pi * phase / 12))


def seasonal_extremes(metadata: Tensor) -> tuple[Tensor, Tensor]:
    """Each metadata row at its hemisphere's midsummer and at its midwinter month.

    Args:
        metadata: float32 [B, 7] (lon, lat, gsd, cloud_cover, year, month, day).

    Returns:
        The rows with ``month`` set where :func:`greenness` is 1, and where it is 0.
    """
    month, lat = METADATA_FIELDS.index('month'), METADATA_FIELDS.index('lat')
    north = metadata[:, lat] >= 0
    summer, winter = metadata.clone(), metadata.clone()
    summer[:, month] = torch.where(north, 7.0, 1.0)
    winter[:, month] = torch.where(north, 1.0, 7.0)
    return summer, winter


def green_chroma(images: Tensor) -> Tensor:
    """Mean green chromaticity ``G / (R + G + B)`` of each [B, 3, H, W] image (0..255)."""
    chroma = images[:, 1] / images.sum(1).clamp(min=1.0)
    return chroma.flatten(1).mean(1)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    grid = torch.from_numpy(rng.random((1, 1, cells, cells), dtype=np.float32))
    up = F.interpolate(grid, size=(size, size), mode='bicubic', align_corners=False)
    out: np.ndarray = up[0, 0].numpy()
    return out


def _layout(
    rng: np.random.Generator,
    prefix: str,
    size: int,
    metadata: dict[str, float | int],
    scene: dict[str, Any],
) -> np.ndarray:
    mask = np.full((size, size), scene['base'], dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    # Finer GSD draws objects larger; higher latitudes hold more forest.
    zoom = _SOURCE_GSD[prefix] / float(metadata['gsd'])
    forest_bias = 0.15 * abs(float(metadata['lat'])) / 60
    for cls in scene['blobs']:
        if rng.random() < 0.75:
            noise = _smooth_noise(rng, size, int(rng.integers(2, 5)))
            shift = forest_bias if cls in (C['forest land'], C['tree']) else 0.0
            mask[noise > rng.uniform(0.6, 0.75) - shift] = cls
    for _ in range(int(rng.random() < scene['roads']) + int(rng.random() < scene['roads'] / 3)):
        width = max(2, round(int(rng.integers(3, 6)) * zoom))
        pos = int(rng.integers(width, size - width))
        if rng.random() < 0.5:
            mask[pos - width // 2 : pos - width // 2 + width, :] = C['road']
        else:
            mask[:, pos - width // 2 : pos - width // 2 + width] = C['road']
    road = mask == C['road']
    for _ in range(int(rng.integers(0, scene['buildings'] + 1))):
        h, w = np.maximum(1, np.round(rng.integers(size // 12, size // 5, size=2) * zoom))
        h, w = int(min(h, size - 1)), int(min(w, size - 1))
        y, x = rng.integers(0, size - h), rng.integers(0, size - w)
        if not road[y : y + h, x : x + w].any():
            mask[y : y + h, x : x + w] = C['building']
    if scene['vehicles'] and road.any():
        ys, xs = np.nonzero(road)
        for i in rng.choice(len(ys), size=min(len(ys), scene['vehicles']), replace=False):
            vh, vw = max(1, round(2 * zoom)), max(2, round(3 * zoom))
            mask[ys[i] : ys[i] + vh, xs[i] : xs[i] + vw] = C['small vehicle']
    for _ in range(int(rng.integers(0, scene['tanks'] + 1))):
        r = int(rng.integers(size // 20 + 2, size // 10 + 3) * zoom)
        r = min(max(r, 1), size // 2 - 1)
        cy, cx = rng.integers(r, size - r, size=2)
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        if not (road & disk).any():
            mask[disk] = C['storage tank']
    return mask


def render_scene(
    rng: np.random.Generator, prefix: str, mask: np.ndarray, metadata: dict[str, float | int]
) -> np.ndarray:
    """Render a mini-corpus image of a mask: class colours and textures, the date's season.

    Args:
        rng: the draws of the texture and noise.
        prefix: the source's file prefix (``DG_``, ``LD_``, ``OEM_``, ``SIOR_``): its sensor tint.
        mask: uint8 [H, W] vocabulary ids.
        metadata: the scene's ``lat`` and ``month`` (vegetation's winter/summer tone).

    Returns:
        uint8 [H, W, 3] RGB.
    """
    size = mask.shape[0]
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    image = np.zeros((size, size, 3), dtype=np.float32)
    fine = rng.normal(0, 1, (size, size)).astype(np.float32)
    blotch = _smooth_noise(rng, size, max(4, size // 6)) - 0.5
    for cls in present_ids(mask):
        where = mask == cls
        colour = np.array(_COLOURS.get(cls, (128, 128, 128)), dtype=np.float32)
        if cls in _WINTER:  # the season shifts vegetation between its winter and summer tones
            green = greenness(float(metadata['month']), float(metadata['lat']))
            colour = np.array(_WINTER[cls], dtype=np.float32) * (1 - green) + colour * green
        shade: np.ndarray = np.zeros((size, size), dtype=np.float32)
        if cls == C['agriculture land']:  # striped fields, orientation and tone per quadrant
            q = (yy // (size // 2)) * 2 + xx // (size // 2)
            angle = rng.uniform(0, np.pi, 4)[q.astype(int)]
            period = rng.uniform(3, 6)
            shade = 18 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
            shade += rng.normal(0, 20, 4)[q.astype(int)]
        elif cls in (C['forest land'], C['tree']):  # canopy blotches
            shade = 60 * blotch + 10 * fine
        elif cls == C['water']:  # smooth with faint ripples
            shade = 5 * np.sin(yy * 0.8 + xx * 0.3) + 2 * fine
        elif cls == C['building']:  # flat bright roof (its shadow is cast below)
            shade = 8 * fine
        else:
            shade = 12 * fine + 15 * blotch
        image[where] = colour + shade[where, None]
    building = mask == C['building']
    shadow = np.zeros_like(building)
    shadow[2:] = building[:-2]  # two rows south of each roof
    image[shadow & ~building] *= 0.6
    image *= np.array(_SENSOR[prefix], dtype=np.float32)
    image += rng.normal(0, 4, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_mini_corpus(
    root: str | Path | None = None,
    seed: int = 0,
    size: int = 64,
    num_train: int = 256,
    num_val: int = 64,
    progress: bool = False,
    latitudes: tuple[float, float] = DEFAULT_LATITUDES,
    long_tail: bool = False,
) -> Path:
    """Render the mini corpus in the EarthSynth-180K layout, once per parameter set.

    Deterministic for a seed. Written to a temporary folder and renamed when complete, so
    concurrent callers (DataLoader workers, DDP ranks) never see a half-written corpus.

    Args:
        root: parent folder of the corpus (default :func:`default_cache_dir`).
        seed: random seed.
        size: tile size in pixels.
        num_train: number of full training scenes.
        num_val: number of full validation scenes.
        progress: show a progress bar.
        latitudes: ``(south, north)`` bounds of the scenes' uniform latitudes; e.g.
            ``(0, 60)`` keeps every scene in the north, where the month alone sets the season.
        long_tail: rare classes (buildings, water, vehicles, tanks) only in the share of
            training scenes :data:`LONG_TAIL_SHARES` gives each, so a few labelled scenes
            miss them; the ``val`` scenes keep every class, so rare classes are tested.

    Returns:
        The corpus root (holding ``train/`` and ``val/``).

    Raises:
        ValueError: if ``latitudes`` is not ``(south, north)`` within [-90, 90].
    """
    south, north = (float(lat) for lat in latitudes)
    if not -90 <= south <= north <= 90:
        raise ValueError(f'latitudes: expected (south, north) within [-90, 90], got {latitudes}')
    params: dict[str, Any] = {
        'version': MINI_VERSION,
        'seed': seed,
        'size': size,
        'num_train': num_train,
        'num_val': num_val,
    }
    name = f'mini-v{MINI_VERSION}-s{seed}-{size}px-{num_train}-{num_val}'
    if (south, north) != DEFAULT_LATITUDES:  # the default corpus keeps its cache name
        params['latitudes'] = [south, north]
        name += f'-lat{south:g}_{north:g}'
    if long_tail:
        params['long_tail'] = True
        name += '-longtail-v2'  # v2: the val split keeps every class
    parent = Path(root) if root is not None else default_cache_dir()
    target = parent / name
    if (target / 'corpus.json').exists():
        return target
    # another process may finish first: then its corpus is kept
    with atomic_directory(target, replace=False) as tmp:
        rng = np.random.default_rng(seed)
        prefixes = list(_SCENES)
        bar = tqdm(total=num_train + num_val, desc='mini corpus', disable=not progress)
        for split_index, (split, count) in enumerate((('train', num_train), ('val', num_val))):
            records: list[dict[str, Any]] = []
            for i in range(count):
                prefix = prefixes[i % len(prefixes)]
                # its own stream: the layouts keep the draws they had before metadata existed
                metadata = _scene_metadata(
                    np.random.default_rng([seed, split_index, i]), prefix, (south, north)
                )
                recipe = (
                    _long_tail_recipe(np.random.default_rng([seed, split_index, i, 1]), prefix)
                    if long_tail and split == 'train'
                    else _SCENES[prefix]
                )
                mask = _layout(rng, prefix, size, metadata, recipe)
                image = render_scene(rng, prefix, mask, metadata)
                stem = f'{prefix}{split}{i:05d}'
                scene = layout.write_sample(tmp / split, stem, image, mask)
                records += [{**record, 'metadata': metadata} for record in scene]
                bar.update()
            layout.write_jsonl(layout.jsonl_path(tmp / split), records)
        bar.close()
        (tmp / 'corpus.json').write_text(json.dumps(params))
    if not (target / 'corpus.json').exists():
        raise FileExistsError(f'{target} exists but holds no corpus.json; remove it')
    return target


class EarthSynthMini(EarthSynth180K):
    """The bundled mini corpus: procedural satellite-like scenes rendered from their masks.

    Scenes from four "sources" (``DG_`` fields and forest, ``LD_`` buildings and roads,
    ``OEM_`` grass and trees, ``SIOR_`` vehicles and storage tanks), each class with its own
    colour and texture and each source with its own colour response, so the image is a
    function of the layout. Each scene has metadata (JSONL ``metadata``: place, GSD, date)
    that changes its appearance: the month (and hemisphere) shifts vegetation between winter
    and summer tones (:func:`greenness`), the GSD scales objects, the latitude shifts the
    forest share (and with it the land-cover mix). Generated once into a cache folder.

    .. versionadded:: 0.1
    """

    sources: ClassVar[tuple[str, ...]] = tuple(_SCENES)

    def __init__(
        self,
        root: str | Path | None = None,
        split: Literal['train', 'val'] = 'train',
        mode: Literal['full', 'category', 'both'] = 'full',
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        seed: int = 0,
        size: int = 64,
        num_train: int = 256,
        num_val: int = 64,
        latitudes: tuple[float, float] = DEFAULT_LATITUDES,
        long_tail: bool = False,
    ) -> None:
        """Initialize a new EarthSynthMini instance, generating the corpus if needed.

        Args:
            root: parent folder of the cached corpus (default :func:`default_cache_dir`).
            split: one of ``train`` or ``val``.
            mode: ``full``, ``category`` or ``both``.
            transforms: a function/transform applied to each sample dict.
            seed: random seed of the corpus.
            size: tile size in pixels.
            num_train: number of full training scenes.
            num_val: number of full validation scenes.
            latitudes: ``(south, north)`` bounds of the scenes' latitudes (see
                :func:`make_mini_corpus`).
            long_tail: rare classes in few scenes (see :func:`make_mini_corpus`).
        """
        corpus = make_mini_corpus(
            root, seed, size, num_train, num_val, latitudes=latitudes, long_tail=long_tail
        )
        super().__init__(corpus, split=split, mode=mode, transforms=transforms)
