# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Labels of the corpus builder: raster masks and vector files on a scene's pixel grid."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.features import rasterize
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds
from rasterio.windows import transform as window_transform

from torchgeo_earthsynth.vocabulary import BACKGROUND, CLASS_IDS, NUM_CLASSES

if TYPE_CHECKING:
    import geopandas as gpd
    from rasterio.io import DatasetReader

__all__ = (
    'VECTOR_SUFFIXES',
    'BBox',
    'Labels',
    'RasterLabels',
    'VectorFile',
    'VectorLabels',
    'intersects',
    'lookup_table',
    'open_raster_labels',
)

logger = logging.getLogger(__name__)

#: Label files with these suffixes are read with geopandas; anything else with rasterio.
VECTOR_SUFFIXES: Final[frozenset[str]] = frozenset(
    {'.gpkg', '.geojson', '.json', '.shp', '.fgb', '.gml', '.kml'}
)
#: ``(left, bottom, right, top)`` in a CRS's units.
BBox = tuple[float, ...]


def _key(value: Any) -> str:
    """Canonical text of a mapping key or a label value, so ``3``, ``3.0`` and ``"3"`` match."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _vocabulary_id(target: Any, source: Any) -> int:
    if isinstance(target, str) and target.strip().isdigit():
        target = int(target)
    if isinstance(target, str):
        if target not in CLASS_IDS:
            raise ValueError(
                f'class_mapping[{source!r}] = {target!r} is not a vocabulary class name '
                '(see torchgeo_earthsynth.vocabulary.VOCABULARY)'
            )
        return CLASS_IDS[target]
    if not isinstance(target, int | np.integer) or isinstance(target, bool):
        raise ValueError(
            f'class_mapping[{source!r}] = {target!r}: expected a vocabulary id or class name'
        )
    if not 0 <= target < NUM_CLASSES:
        raise ValueError(
            f'class_mapping[{source!r}] = {target!r} is not a vocabulary id '
            f'in [0, {NUM_CLASSES - 1}]'
        )
    return int(target)


def lookup_table(class_mapping: Mapping[Any, int | str]) -> dict[str, int]:
    """Label value text -> vocabulary id.

    Args:
        class_mapping: label value -> vocabulary id or class name.

    Returns:
        The mapping keyed by canonical value text (``3``, ``3.0`` and ``"3"`` alike).

    Raises:
        ValueError: if the mapping is empty or names no vocabulary class.
    """
    if not class_mapping:
        raise ValueError('class_mapping is empty; map at least one label value to a class')
    return {_key(k): _vocabulary_id(v, k) for k, v in class_mapping.items()}


class Labels:
    """Labels of one scene, read window by window on the scene's pixel grid."""

    def window(self, window: Window) -> np.ndarray:
        """uint8 vocabulary-id mask of ``window`` of the scene."""
        raise NotImplementedError

    def missing(self, scene: DatasetReader | WarpedVRT) -> str | None:
        """Why no label overlaps the scene, or None when some may."""
        raise NotImplementedError


class VectorLabels(Labels):
    """Vector features (already in the scene's CRS) burned window by window."""

    def __init__(
        self,
        geometries: gpd.GeoSeries,
        ids: np.ndarray,
        scene: DatasetReader | WarpedVRT,
        hint: str = '',
    ) -> None:
        self.geometries = geometries
        self.ids = ids
        self.scene = scene
        self.hint = hint

    def window(self, window: Window) -> np.ndarray:
        """uint8 vocabulary-id mask of ``window``: later features win where they overlap."""
        import shapely

        shape = (int(window.height), int(window.width))
        area = shapely.box(*window_bounds(window, self.scene.transform))
        hits = self.geometries.sindex.query(area)
        if len(hits) == 0:
            return np.zeros(shape, dtype=np.uint8)
        # rasterize burns in order, so sorting the hits keeps the file's order: later wins
        hits = np.sort(hits)
        shapes = zip(self.geometries.iloc[hits], self.ids[hits].tolist())
        burned: np.ndarray = rasterize(
            shapes,
            out_shape=shape,
            transform=window_transform(window, self.scene.transform),
            fill=BACKGROUND,
            dtype='uint8',
        )
        return burned

    def missing(self, scene: DatasetReader | WarpedVRT) -> str | None:
        """Why no feature intersects the scene, or None when one does."""
        import shapely

        if len(self.geometries) == 0:
            return 'the label file holds no features'
        if len(self.geometries.sindex.query(shapely.box(*scene.bounds), 'intersects')):
            return None
        return (
            f'labels span {_bounds_text(self.geometries.total_bounds)} and the scene '
            f'{_bounds_text(scene.bounds)} in {scene.crs}{self.hint}'
        )


class RasterLabels(Labels):
    """Band 1 of a raster mask on the scene's grid (warped there if it was not)."""

    def __init__(
        self,
        source: DatasetReader | WarpedVRT,
        path: Path,
        lookup: Mapping[str, int],
        unmapped: Literal['error', 'background'],
    ) -> None:
        self.source = source
        self.path = path
        self.lookup = dict(lookup)
        self.unmapped = unmapped
        # pixel value 0 and the nodata value mean "no label" unless the user maps them
        self.lookup.setdefault('0', BACKGROUND)

    def window(self, window: Window) -> np.ndarray:
        """uint8 vocabulary-id mask of ``window``; nodata and 0 are background if unmapped."""
        data = self.source.read(1, window=window, masked=True)
        valid = ~np.ma.getmaskarray(data)
        values, inverse = np.unique(data.data.ravel(), return_inverse=True)
        inverse = inverse.reshape(data.shape)
        ids = np.zeros(len(values), dtype=np.uint8)
        for i in np.unique(inverse[valid]).tolist():
            key = _key(values[i])
            if key not in self.lookup and self.unmapped == 'error':
                raise ValueError(
                    f'{self.path}: pixel value {key} (band 1) is not in class_mapping '
                    f'(mapped: {sorted(self.lookup)}); add it to the mapping or pass '
                    "unmapped='background'"
                )
            ids[i] = self.lookup.get(key, BACKGROUND)
        out: np.ndarray = np.where(valid, ids[inverse], BACKGROUND).astype(np.uint8)
        return out

    def missing(self, scene: DatasetReader | WarpedVRT) -> str | None:
        """Why the mask's extent misses the scene, or None when they overlap."""
        source = self.source.src_dataset if isinstance(self.source, WarpedVRT) else self.source
        if source.crs is None or scene.crs is None:
            return None  # read pixel for pixel: same size, so they overlap
        bounds = transform_bounds(source.crs, scene.crs, *source.bounds)
        if intersects(bounds, tuple(scene.bounds)):
            return None
        return (
            f'labels span {_bounds_text(bounds)} and the scene {_bounds_text(scene.bounds)} '
            f'in {scene.crs}'
        )


def _bounds_text(bounds: Sequence[float]) -> str:
    return '({:.6g}, {:.6g}, {:.6g}, {:.6g})'.format(*bounds)


def intersects(a: BBox, b: BBox) -> bool:
    """Whether two ``(left, bottom, right, top)`` boxes share area."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


class VectorFile:
    """A vector label file read once, mapped to ids once, reprojected per scene CRS."""

    def __init__(
        self,
        path: Path,
        lookup: Mapping[str, int],
        label_column: str,
        unmapped: Literal['error', 'background'],
    ) -> None:
        import geopandas as gpd

        try:
            frame = gpd.read_file(path)
        except Exception as error:
            raise ValueError(f'{path}: cannot read vector labels ({error})') from error
        if frame.empty:
            raise ValueError(
                f'{path}: the label file holds no features, so no label can overlap a scene; '
                f'expected geometries with a {label_column!r} attribute'
            )
        if label_column not in frame.columns:
            columns = [c for c in frame.columns if c != frame.geometry.name]
            raise ValueError(
                f'{path}: no column {label_column!r} (columns: {columns}); '
                'pass label_column=<the class attribute>'
            )
        if frame.crs is None:
            raise ValueError(
                f'{path}: the vector file has no CRS; set one (e.g. with '
                'GeoDataFrame.set_crs) so it can be reprojected to the scenes'
            )
        frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
        self.hint = ''
        left, bottom, right, top = frame.total_bounds if len(frame) else (0, 0, 0, 0)
        outside_degrees = max(abs(left), abs(right)) > 180 or max(abs(bottom), abs(top)) > 90
        if frame.crs.is_geographic and outside_degrees:
            self.hint = (
                f'; hint: its coordinates (e.g. {left:.0f}, {bottom:.0f}) look projected (metres), '
                f'but the file says {frame.crs.to_string()} longitude/latitude (GeoJSON is '
                'always WGS84): write it in EPSG:4326, or as a GeoPackage that records its CRS'
            )
        keys = [_key(v) for v in frame[label_column].tolist()]
        missing = sorted({k for k in keys if k not in lookup})
        if missing and unmapped == 'error':
            raise ValueError(
                f'{path}, column {label_column!r}: value(s) {missing[:10]} are not in '
                f'class_mapping (mapped: {sorted(lookup)}); add them to the mapping or pass '
                "unmapped='background'"
            )
        self.path = path
        self.geometries = frame.geometry.reset_index(drop=True)
        self.ids = np.array([lookup.get(k, BACKGROUND) for k in keys], dtype=np.uint8)
        self._by_crs: dict[str, gpd.GeoSeries] = {}

    def for_scene(self, scene: DatasetReader | WarpedVRT, name: Path) -> VectorLabels:
        """The features reprojected to a scene's CRS (once per CRS).

        Args:
            scene: the scene's grid.
            name: the scene's path, for errors.

        Returns:
            Its labels.

        Raises:
            ValueError: if the scene has no CRS.
        """
        if scene.crs is None:
            raise ValueError(
                f'{name}: the scene has no CRS, so the vector labels {self.path} cannot be '
                'placed on it; give the scene a CRS (e.g. with gdal_edit.py -a_srs) or pass '
                'a raster mask of the same size in --labels'
            )
        crs = scene.crs.to_wkt()
        if crs not in self._by_crs:
            self._by_crs[crs] = self.geometries.to_crs(crs)
        return VectorLabels(self._by_crs[crs], self.ids, scene, self.hint)


def open_raster_labels(
    path: Path,
    scene: DatasetReader | WarpedVRT,
    name: Path,
    lookup: Mapping[str, int],
    unmapped: Literal['error', 'background'],
    stack: ExitStack,
) -> RasterLabels:
    """Open a raster mask on a scene's grid: as it is, warped (NEAREST), or pixel for pixel.

    Args:
        path: the mask.
        scene: the scene's grid.
        name: the scene's path, for errors.
        lookup: from :func:`lookup_table`.
        unmapped: what an unmapped value becomes (``'error'`` raises).
        stack: closes what is opened.

    Returns:
        The labels.

    Raises:
        ValueError: if the mask cannot be read or placed on the scene.
    """
    try:
        src = stack.enter_context(rasterio.open(path))
    except RasterioIOError as error:
        raise ValueError(f'{path}: cannot open raster labels ({error})') from error
    same_grid = (
        src.crs == scene.crs and src.transform == scene.transform and src.shape == scene.shape
    )
    if same_grid:
        return RasterLabels(src, path, lookup, unmapped)
    if src.crs is None or scene.crs is None:
        lacking = ' and '.join(
            n for n, crs in (('the mask', src.crs), ('the scene', scene.crs)) if crs is None
        )
        if src.shape == scene.shape:
            logger.warning(
                '%s: %s without a CRS; reading the mask pixel for pixel on %s (same size)',
                path,
                lacking,
                name,
            )
            return RasterLabels(src, path, lookup, unmapped)
        raise ValueError(
            f'{path}: the mask is {src.width}x{src.height} and the scene {name} is '
            f'{scene.width}x{scene.height}, and {lacking} without a CRS, so the mask cannot be '
            'reprojected onto the scene; give both a CRS, or pass in --labels a mask of the '
            "scene's size (read pixel for pixel)"
        )
    # put the mask on the scene's grid lazily; NEAREST keeps class values intact
    vrt = stack.enter_context(
        WarpedVRT(
            src,
            crs=scene.crs,
            transform=scene.transform,
            width=scene.width,
            height=scene.height,
            resampling=Resampling.nearest,
        )
    )
    return RasterLabels(vrt, path, lookup, unmapped)
