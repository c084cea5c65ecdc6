# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Where and when a crop of a georeferenced scene was taken: its provenance and metadata."""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Mapping
from typing import Any, Final

from rasterio.crs import CRS
from rasterio.transform import Affine
from rasterio.warp import transform as warp_transform

__all__ = (
    'ACQUISITION_TAG',
    'crop_fields',
    'parse_date',
    'pixel_size_metres',
    'scene_date',
    'window_bbox',
)

#: Raster tags that name the acquisition date (``ACQUISITIONDATE``, ``DATE_ACQUIRED``,
#: ``SENSING_TIME``, ``CAPTURE_DATE``...), preferred to ``TIFFTAG_DATETIME``, which often
#: records when the file was written rather than when the scene was taken.
ACQUISITION_TAG: Final = re.compile(r'ACQUI|SENSING|CAPTURE', re.IGNORECASE)
#: Mean Earth radius (IUGG), metres: sizes of degree-based pixels.
EARTH_RADIUS: Final = 6_371_008.8
_DATE: Final = re.compile(r'(\d{4})[-:/]?(\d{2})[-:/]?(\d{2})')


def parse_date(text: str, source: str = '--date') -> datetime.date:
    """A calendar date from the first ``YYYY-MM-DD`` (or ``YYYY:MM:DD``, ``YYYYMMDD``) in text.

    Args:
        text: e.g. ``2021-06-30`` or the TIFF form ``2021:06:30 10:00:00``.
        source: named in errors (a CLI flag or a tag).

    Returns:
        The date.

    Raises:
        ValueError: if the text holds no valid date.
    """
    match = _DATE.search(text)
    try:
        if match is None:
            raise ValueError('no YYYY-MM-DD date in it')
        return datetime.date(*(int(g) for g in match.groups()))
    except ValueError as error:
        raise ValueError(f'{source} = {text!r}: expected a date YYYY-MM-DD ({error})') from error


def scene_date(tags: Mapping[str, str], date: str | None = None) -> datetime.date | None:
    """The acquisition date of a scene: the user's, else its tags', else unknown.

    Args:
        tags: the raster's tags (``DatasetReader.tags()``).
        date: the user's ``YYYY-MM-DD`` (wins over tags).

    Returns:
        The date, or None when neither the user nor the tags give one.

    Raises:
        ValueError: if ``date`` is not a valid date.
    """
    if date is not None:
        return parse_date(date)
    named = [k for k in sorted(tags) if ACQUISITION_TAG.search(k)]
    for key in [*named, 'TIFFTAG_DATETIME']:
        if key in tags:
            try:
                return parse_date(tags[key], f'tag {key}')
            except ValueError:
                continue  # an unparseable tag says nothing; try the next
    return None


def pixel_size_metres(crs: CRS | None, transform: Affine, lat: float) -> float:
    """Ground sampling distance in metres: the square root of a pixel's area.

    Args:
        crs: the grid's CRS (None: unknown units).
        transform: the grid's affine transform.
        lat: latitude of the place (degrees), for degree-based CRSs.

    Returns:
        Metres per pixel; NaN without a CRS or with units that are not metres or degrees.
    """
    area = abs(transform.a * transform.e - transform.b * transform.d)
    if crs is None:
        return math.nan
    if crs.is_geographic:
        # a degree of longitude shrinks with cos(latitude); a degree of latitude does not
        metres_per_degree = math.radians(1) * EARTH_RADIUS
        return math.sqrt(area * math.cos(math.radians(lat))) * metres_per_degree
    try:
        _, factor = crs.linear_units_factor
    except Exception:  # CRSError for a CRS without linear units
        return math.nan
    return math.sqrt(area) * float(factor)


def window_bbox(transform: Affine, width: float, height: float) -> tuple[float, ...]:
    """``(left, bottom, right, top)`` of a ``width`` x ``height`` pixel grid in its CRS.

    Args:
        transform: the grid's affine transform (its pixel (0, 0) at the top-left corner).
        width: columns.
        height: rows.

    Returns:
        The axis-aligned bounding box of the grid's corners.
    """
    corners = [transform @ (c, r) for c in (0, width) for r in (0, height)]
    xs, ys = [x for x, _ in corners], [y for _, y in corners]
    return min(xs), min(ys), max(xs), max(ys)


def crop_fields(
    scene: str,
    crs: CRS | None,
    transform: Affine,
    window: tuple[int, int, int, int],
    date: datetime.date | None,
) -> dict[str, Any]:
    """The ``provenance`` and ``metadata`` objects of a crop's JSONL record.

    Args:
        scene: the scene's path.
        crs: the scene's CRS (None when it has none).
        transform: the crop's affine transform (the window's, not the scene's).
        window: ``(col_off, row_off, width, height)`` in the scene's pixel grid.
        date: the acquisition date, if known.

    Returns:
        ``{"provenance": {"scene", "window", "crs", "transform"}, "metadata": {"lon", "lat",
        "gsd", "year", "month", "day"}}``; unknown values are null (lon/lat/gsd without a
        CRS, the date when neither tags nor the user give one).
    """
    width, height = window[2], window[3]
    lon = lat = gsd = None
    if crs is not None:
        x, y = transform @ (width / 2, height / 2)
        lons, lats = warp_transform(crs, 'EPSG:4326', [x], [y])
        lon, lat = float(lons[0]), float(lats[0])
        size = pixel_size_metres(crs, transform, lat)
        gsd = None if math.isnan(size) else size
    return {
        'provenance': {
            'scene': scene,
            'window': list(window),
            'crs': None if crs is None else crs.to_string(),
            'transform': list(transform)[:6],
        },
        'metadata': {
            'lon': lon,
            'lat': lat,
            'gsd': gsd,
            'year': None if date is None else date.year,
            'month': None if date is None else date.month,
            'day': None if date is None else date.day,
        },
    }
