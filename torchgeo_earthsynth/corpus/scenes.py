# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Scenes of the corpus builder: bands, nodata, stretch, resampling, random windows."""

from __future__ import annotations

import datetime
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import RasterioIOError
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window

from torchgeo_earthsynth.corpus.labels import Labels, VectorFile, open_raster_labels
from torchgeo_earthsynth.corpus.scene_metadata import pixel_size_metres, scene_date

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

__all__ = (
    'STRETCH_SAMPLE_SIZE',
    'PreparedScene',
    'SceneOptions',
    'nodata_pixels',
    'open_scene',
    'prepare_scene',
    'random_windows',
    'to_uint8',
)

logger = logging.getLogger(__name__)

#: Longest side of the decimated read used to compute a scene's percentile stretch.
STRETCH_SAMPLE_SIZE: Final = 1024


def open_scene(path: Path) -> DatasetReader:
    """Open a scene with rasterio.

    Args:
        path: the scene.

    Returns:
        The open dataset (use it as a context manager).

    Raises:
        ValueError: naming the file, if rasterio cannot open it.
    """
    try:
        scene: DatasetReader = rasterio.open(path)
    except RasterioIOError as error:
        raise ValueError(f'{path}: cannot open scene ({error})') from error
    return scene


def _centre_lat(scene: DatasetReader) -> float:
    x, y = scene.transform @ (scene.width / 2, scene.height / 2)
    return float(warp_transform(scene.crs, 'EPSG:4326', [x], [y])[1][0])


def _on_grid(
    scene: DatasetReader, path: Path, gsd: float | None, stack: ExitStack
) -> DatasetReader | WarpedVRT:
    """The scene itself, or resampled lazily to ``gsd`` metres per pixel."""
    if gsd is None:
        return scene
    native = (
        math.nan
        if scene.crs is None
        else pixel_size_metres(scene.crs, scene.transform, _centre_lat(scene))
    )
    if math.isnan(native):
        raise ValueError(
            f'{path}: --gsd needs the scene in a CRS of metres or degrees; it has '
            f'{scene.crs or "no CRS"}'
        )
    factor = gsd / native
    return stack.enter_context(
        WarpedVRT(
            scene,
            crs=scene.crs,
            transform=scene.transform @ Affine.scale(factor),
            width=max(1, round(scene.width / factor)),
            height=max(1, round(scene.height / factor)),
            # averaging when coarsening keeps every source pixel's share
            resampling=Resampling.average if factor > 1 else Resampling.bilinear,
        )
    )


def _bands(scene: DatasetReader, bands: Sequence[int] | None) -> list[int]:
    if bands is None:
        interp = list(scene.colorinterp)
        rgb = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
        if all(c in interp for c in rgb):
            return [interp.index(c) + 1 for c in rgb]  # e.g. B,G,R,A -> 3, 2, 1
        colour = [i + 1 for i, c in enumerate(interp) if c != ColorInterp.alpha]
        if len(colour) == 1:
            return colour * 3
        if len(colour) == 2:
            raise ValueError(
                f'{scene.name}: has 2 bands and no red/green/blue colour interpretation; '
                'pass --bands R G B (1-based)'
            )
        return colour[:3]
    chosen = list(bands)
    if len(chosen) == 1:
        chosen *= 3
    if len(chosen) != 3:
        raise ValueError(f'--bands must name 1 or 3 band indexes (1-based), got {list(bands)}')
    bad = [b for b in chosen if not 1 <= b <= scene.count]
    if bad:
        raise ValueError(
            f'{scene.name}: band(s) {bad} out of range; the scene has '
            f'{scene.count} band(s), numbered from 1'
        )
    return chosen


def _sample(
    scene: DatasetReader | WarpedVRT, bands: list[int], name: Path, warn: bool
) -> np.ma.MaskedArray:
    """A decimated read of ``bands`` (nodata masked), refused if some band is all nodata.

    Constant bands give flat crops: all constant is an error, some constant a warning.
    """
    scale = min(1.0, STRETCH_SAMPLE_SIZE / max(scene.width, scene.height))
    shape = (len(bands), max(1, round(scene.height * scale)), max(1, round(scene.width * scale)))
    sample: np.ma.MaskedArray = scene.read(
        bands, out_shape=shape, masked=True, resampling=Resampling.nearest
    )
    sample = np.ma.masked_invalid(sample) if sample.dtype.kind == 'f' else sample
    constant = {}
    for i, band in enumerate(bands):
        values = sample[i].compressed()
        if not values.size:
            raise ValueError(
                f'{name}: band {band} holds only nodata; expected a scene with valid pixels'
            )
        if values.min() == values.max():
            constant[band] = values.min().item()
    if len(constant) == len(set(bands)):
        raise ValueError(
            f'{name}: band(s) {sorted(constant)} are constant ({constant}); every crop would be '
            'flat. Pass --bands with bands that vary'
        )
    if constant and warn:
        logger.warning('%s: band(s) %s are constant: flat in every crop', name, constant)
    return sample


def _stretch(
    scene: DatasetReader | WarpedVRT, bands: list[int], sample: np.ma.MaskedArray
) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-band 2nd and 98th percentiles of the decimated read, or None for uint8 scenes."""
    if all(scene.dtypes[b - 1] == 'uint8' for b in bands):
        return None
    low, high = np.zeros(len(bands)), np.ones(len(bands))
    for i in range(len(bands)):
        values = sample[i].compressed().astype(np.float64)
        low[i], high[i] = np.percentile(values, [2, 98])
    return low, high


def to_uint8(data: np.ndarray, stretch: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """[3, H, W] band data -> uint8 [H, W, 3]."""
    if stretch is None:
        out = data.astype(np.uint8)
    else:
        low, high = (s[:, None, None] for s in stretch)
        span = np.maximum(high - low, np.finfo(np.float64).eps)
        values = data.astype(np.float64)
        # NaN and inf (float nodata) fall to the band's low end, i.e. 0
        values = np.where(np.isfinite(values), values, low)
        scaled = (values - low) / span * 255
        out = np.clip(np.round(scaled), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out.transpose(1, 2, 0))


def nodata_pixels(data: np.ma.MaskedArray) -> np.ndarray:
    """Bool [H, W]: pixels that are nodata (masked or non-finite) in any band."""
    nodata = np.asarray(np.ma.getmaskarray(data).any(axis=0))
    if data.dtype.kind == 'f':
        nodata = nodata | ~np.isfinite(data.data).all(axis=0)
    return nodata


def random_windows(
    rng: np.random.Generator, scene: DatasetReader | WarpedVRT, tile_size: int, tries: int
) -> Iterator[Window]:
    """``tries`` uniformly random ``tile_size`` windows inside the scene.

    Args:
        rng: the scene's generator.
        scene: the grid to crop.
        tile_size: window side in pixels.
        tries: how many windows.

    Yields:
        Windows (they may overlap; the caller decides).
    """
    for _ in range(tries):
        col = int(rng.integers(0, scene.width - tile_size + 1))
        row = int(rng.integers(0, scene.height - tile_size + 1))
        yield Window(col, row, tile_size, tile_size)


@dataclass
class SceneOptions:
    """The arguments of ``build_corpus`` that :func:`prepare_scene` needs."""

    bands: Sequence[int] | None
    gsd: float | None
    date: str | None
    lookup: Mapping[str, int]
    unmapped: Literal['error', 'background']
    vector_files: dict[Path, VectorFile]


@dataclass
class PreparedScene:
    """A scene ready to crop: its grid (maybe resampled), bands, stretch, labels, date."""

    grid: DatasetReader | WarpedVRT
    bands: list[int]
    stretch: tuple[np.ndarray, np.ndarray] | None
    labels: Labels
    date: datetime.date | None


def prepare_scene(
    path: Path, label_path: Path, options: SceneOptions, stack: ExitStack, check: bool = False
) -> PreparedScene:
    """Open a scene and its labels; refuse it if no label overlaps it or its bands are flat.

    ``check``: the first look at the scene, which also warns about constant bands.
    """
    source = stack.enter_context(open_scene(path))
    chosen = _bands(source, options.bands)
    grid = _on_grid(source, path, options.gsd, stack)
    stretch = _stretch(grid, chosen, _sample(grid, chosen, path, warn=check))
    labels: Labels
    if label_path in options.vector_files:
        labels = options.vector_files[label_path].for_scene(grid, path)
    else:
        labels = open_raster_labels(label_path, grid, path, options.lookup, options.unmapped, stack)
    why = labels.missing(grid)
    if why is not None:
        raise ValueError(
            f'{path}: no label of {label_path} overlaps the scene ({why}); check that the '
            '--labels and --scenes cover the same place'
        )
    return PreparedScene(grid, chosen, stretch, labels, scene_date(source.tags(), options.date))
