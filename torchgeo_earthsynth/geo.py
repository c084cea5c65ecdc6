# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Metadata (place, resolution, date) of TorchGeo GeoDataset samples, for geo-aware synthesis."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import pandas as pd
import torch
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform
from torch import Tensor

from torchgeo_earthsynth.conditions import NUM_METADATA

__all__ = ('metadata_from_bounds', 'metadata_from_geo_sample')

_WGS84: Final = CRS.from_epsg(4326)
#: Earth's mean radius (m), for the size of a pixel given in degrees.
_EARTH_RADIUS: Final = 6_371_008.8


def _pixel_size_m(crs: CRS, res: tuple[float, float], lon: float, lat: float) -> float:
    """Mean metres per pixel of a ``res`` pixel at (lon, lat), whatever the CRS's units."""
    if crs.is_geographic:  # degrees: a degree of longitude shrinks with cos(latitude)
        metres_per_degree = math.radians(1) * _EARTH_RADIUS
        width = abs(res[0]) * metres_per_degree * math.cos(math.radians(lat))
        return (width + abs(res[1]) * metres_per_degree) / 2
    factor = crs.linear_units_factor[1]  # metres per CRS unit (feet, ...)
    return (abs(res[0]) + abs(res[1])) / 2 * float(factor)


def _date(start: Any, stop: Any) -> tuple[float, float, float]:
    """(year, month, day) of a time slice's midpoint; NaN where TorchGeo knows no date."""
    unknown = (math.nan,) * 3
    if start is None or stop is None:
        return unknown
    start, stop = pd.Timestamp(start), pd.Timestamp(stop)
    if start <= pd.Timestamp.min or stop >= pd.Timestamp.max:  # TorchGeo's "no date"
        return unknown
    middle = start + (stop - start) / 2
    return float(middle.year), float(middle.month), float(middle.day)


def metadata_from_bounds(
    bounds: Sequence[slice],
    crs: CRS | str,
    res: float | tuple[float, float] | None = None,
    date: datetime | None = None,
) -> Tensor:
    """Metadata float32 [7] of a spatiotemporal slice (TorchGeo's ``bounds``).

    Args:
        bounds: ``(x, y[, t])`` slices in ``crs``, as TorchGeo's samplers and datasets give
            them; a slice's step, where set, is the resolution.
        crs: the slices' CRS.
        res: resolution (CRS units per pixel) where the slices carry none.
        date: the acquisition date where ``bounds`` has no time (or TorchGeo's "no date").

    Returns:
        float32 [7] (:data:`~torchgeo_earthsynth.conditions.METADATA_FIELDS`): centre in
        WGS84 degrees, GSD in metres per pixel, cloud cover NaN (unknown), the time slice's
        midpoint date; NaN for whatever is unknown.

    Raises:
        ValueError: if ``bounds`` has fewer than two slices or an open x/y extent.
    """
    if len(bounds) < 2:
        raise ValueError(f'bounds: expected (x, y[, t]) slices, got {bounds!r}')
    x, y = bounds[0], bounds[1]
    if None in (x.start, x.stop, y.start, y.stop):
        raise ValueError(f'bounds: x and y slices need a start and a stop, got {x!r}, {y!r}')
    crs = CRS.from_user_input(crs)
    lons, lats = warp_transform(crs, _WGS84, [(x.start + x.stop) / 2], [(y.start + y.stop) / 2])
    lon, lat = float(lons[0]), float(lats[0])
    steps = (x.step, y.step) if x.step is not None and y.step is not None else None
    if steps is None and res is not None:
        steps = (res, res) if isinstance(res, int | float) else (res[0], res[1])
    gsd = math.nan if steps is None else _pixel_size_m(crs, steps, lon, lat)
    year, month, day = (math.nan,) * 3
    if len(bounds) > 2:
        year, month, day = _date(bounds[2].start, bounds[2].stop)
    if date is not None and math.isnan(year):
        year, month, day = float(date.year), float(date.month), float(date.day)
    # METADATA_FIELDS order; cloud cover is not in a GeoDataset sample
    return torch.tensor([lon, lat, gsd, math.nan, year, month, day], dtype=torch.float32)


def _slices_from_tensor(bounds: Tensor) -> tuple[slice, slice, slice]:
    """TorchGeo 0.10's tensor ``bounds`` [9] (x, y, t start/stop/step) as slices."""
    x0, x1, xs, y0, y1, ys, t0, t1 = bounds.double().tolist()[:8]
    try:
        start = pd.Timestamp(t0, unit='s')
        stop = pd.Timestamp(t1, unit='s')
    except (OverflowError, ValueError):  # TorchGeo's "no date" is outside pandas' range
        start = stop = None
    return slice(x0, x1, xs), slice(y0, y1, ys), slice(start, stop)


def metadata_from_geo_sample(
    sample: Mapping[str, Any],
    res: float | tuple[float, float] | None = None,
    date: datetime | None = None,
    crs: CRS | str | None = None,
) -> Tensor:
    """Metadata of a TorchGeo ``GeoDataset`` sample or batch.

    TorchGeo 0.8 samples carry ``bounds`` (slices) and ``crs``; TorchGeo 0.10 samples carry
    ``bounds`` as a tensor (x, y, t start/stop/step) and no CRS: pass the dataset's,
    ``metadata_from_geo_sample(batch, crs=dataset.crs)``. Where the slices have no step (0.8's
    samplers), pass the dataset's ``res``. GSD is that of the sample as read; resizing it later
    changes it.

    Args:
        sample: a sample or a batch made by TorchGeo's ``stack_samples``.
        res: resolution (CRS units per pixel) where the slices carry none.
        date: the acquisition date where the sample has none.
        crs: the CRS where the sample carries none (TorchGeo 0.10).

    Returns:
        float32 [7] for a sample, [B, 7] for a batch.

    Raises:
        ValueError: if ``bounds`` or a CRS is missing, or the batch lists differ in length.
    """
    if 'bounds' not in sample or ('crs' not in sample and crs is None):
        raise ValueError(
            f'sample: expected TorchGeo GeoDataset keys bounds and crs, got {sorted(sample)} '
            '(TorchGeo 0.10 samples carry no crs: pass crs=dataset.crs)'
        )
    bounds, crs = sample['bounds'], sample.get('crs', crs)
    if isinstance(bounds, Tensor):
        rows = [_slices_from_tensor(row) for row in bounds.reshape(-1, bounds.shape[-1])]
        bounds = rows if sample['bounds'].ndim > 1 else rows[0]
    if isinstance(bounds, list):  # a batch from stack_samples
        crss = crs if isinstance(crs, list) else [crs] * len(bounds)
        if len(crss) != len(bounds):
            raise ValueError(f'batch: {len(bounds)} bounds but {len(crss)} crs')
        if not bounds:
            return torch.zeros(0, NUM_METADATA)
        return torch.stack(
            [metadata_from_bounds(b, c, res, date) for b, c in zip(bounds, crss, strict=True)]
        )
    return metadata_from_bounds(bounds, crs, res, date)
