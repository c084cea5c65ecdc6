# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Build an EarthSynth-180K-layout corpus from your own GeoTIFF scenes and labels."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
from rasterio.transform import Affine
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from tqdm.auto import tqdm

from torchgeo_earthsynth.corpus.labels import (
    VECTOR_SUFFIXES,
    BBox,
    VectorFile,
    intersects,
    lookup_table,
)
from torchgeo_earthsynth.corpus.scene_metadata import crop_fields, scene_date, window_bbox
from torchgeo_earthsynth.corpus.scenes import (
    SceneOptions,
    nodata_pixels,
    prepare_scene,
    random_windows,
    to_uint8,
)
from torchgeo_earthsynth.datasets import layout
from torchgeo_earthsynth.vocabulary import BACKGROUND, VOCABULARY

#: Random windows tried per requested crop before a scene is given up on.
TRIES_PER_CROP: Final = 10

_SAFE = re.compile(r'[^A-Za-z0-9_.-]+')


@dataclass
class BuildReport:
    """What :func:`build_corpus` did.

    .. versionadded:: 0.1
    """

    #: The split folder written to, e.g. ``<output>/train``.
    split_dir: Path
    #: Scenes processed.
    scenes: int = 0
    #: Full samples (crops) written.
    written: int = 0
    #: Single-category samples written alongside them.
    category_samples: int = 0
    #: Candidate crops rejected for a labelled fraction below the minimum.
    rejected: int = 0
    #: Records that were already in the split's JSONL and were kept.
    existing_records: int = 0
    #: Crops written per scene (by scene path).
    per_scene: dict[str, int] = field(default_factory=dict)
    #: Pixels per vocabulary class name over all written crops (background included).
    class_pixels: dict[str, int] = field(default_factory=dict)
    #: Crops requested per scene.
    requested: int = 0
    #: Where each written crop came from: file stem -> (scene path, pixel window in it).
    windows: dict[str, tuple[str, Window]] = field(default_factory=dict)
    #: Candidate crops rejected for a nodata share above the maximum.
    nodata_rejected: int = 0
    #: Candidate crops rejected for overlapping a crop already taken from the same scene.
    overlapping: int = 0
    #: Scenes that already have crops in the other split (by scene path): this split then
    #: takes windows disjoint from those (split by disjoint windows, not by scene).
    shared_scenes: dict[str, int] = field(default_factory=dict)

    @property
    def split_by(self) -> Literal['scene', 'window']:
        """How this split is kept apart from the other: by whole scenes, or disjoint windows."""
        return 'window' if self.shared_scenes else 'scene'

    @property
    def shortfalls(self) -> dict[str, int]:
        """Scenes that gave fewer crops than requested, with how many they gave."""
        return {s: n for s, n in self.per_scene.items() if n < self.requested}

    def summary(self) -> str:
        """One line for logs and the CLI."""
        top = sorted(
            ((n, c) for c, n in self.class_pixels.items() if c != VOCABULARY[BACKGROUND]),
            reverse=True,
        )[:5]
        classes = ', '.join(f'{c} {n}' for n, c in top) or 'none'
        short = f', {len(self.shortfalls)} scene(s) short of crops' if self.shortfalls else ''
        split = (
            f'split by disjoint windows ({len(self.shared_scenes)} scene(s) in both splits)'
            if self.shared_scenes
            else 'split by scene'
        )
        return (
            f'{self.split_dir}: wrote {self.written} crops (+{self.category_samples} category '
            f'samples) from {self.scenes} scene(s); rejected {self.rejected} below the labelled '
            f'fraction, {self.nodata_rejected} above the nodata share, {self.overlapping} '
            f'overlapping{short}; {split}; top classes (px): {classes}'
        )


def _taken(records: Sequence[Any]) -> dict[str, list[BBox]]:
    """Map-coordinate boxes of crops already listed, by scene path (from their provenance)."""
    taken: dict[str, list[BBox]] = {}
    for record in records:
        prov = record.get('provenance') if isinstance(record, dict) else None
        if not isinstance(prov, dict) or 'category_masks' not in record:
            continue  # category records repeat their full record's crop
        try:
            transform = Affine(*prov['transform'][:6])
            box = window_bbox(transform, prov['window'][2], prov['window'][3])
        except (KeyError, TypeError, IndexError):
            continue
        taken.setdefault(str(prov.get('scene')), []).append(box)
    return taken


def _existing_records(split_dir: Path) -> list[dict[str, Any]]:
    jsonl = layout.jsonl_path(split_dir)
    if not jsonl.exists():
        if any((split_dir / layout.MASKS).glob('*.png')):
            raise ValueError(
                f'{split_dir} already holds masks but no {jsonl.name}; appending would hide '
                'them from readers. Run torchgeo_earthsynth.datasets.layout.augment_split on '
                'it first, or choose another output folder'
            )
        return []
    records = []
    for number, line in layout.iter_jsonl(jsonl):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(
                f'{jsonl} line {number}: not valid JSON ({error.msg}); fix or '
                'remove it before appending'
            )
    return records


def _listed(split_dir: Path) -> list[Any]:
    """The records of a split's JSONL, or none; lines that are not JSON are left out."""
    jsonl = layout.jsonl_path(split_dir)
    if not jsonl.is_file():
        return []
    records = []
    for _, line in layout.iter_jsonl(jsonl):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # that split's reader reports it
    return records


def _pair_labels(scenes: Sequence[Path], labels: Sequence[str | Path] | str | Path) -> list[Path]:
    if isinstance(labels, str | Path):
        return [Path(labels)] * len(scenes)
    paths = [Path(p) for p in labels]
    if len(paths) == 1:
        return paths * len(scenes)
    if len(paths) != len(scenes):
        raise ValueError(
            f'got {len(paths)} label files for {len(scenes)} scenes; pass one '
            'label file shared by all scenes or one per scene, in order'
        )
    return paths


def build_corpus(
    scenes: Sequence[str | Path],
    labels: Sequence[str | Path] | str | Path,
    output: str | Path,
    class_mapping: Mapping[Any, int | str],
    split: Literal['train', 'val'] = 'train',
    crops_per_scene: int = 16,
    tile_size: int = 512,
    min_labelled_fraction: float = 0.1,
    bands: Sequence[int] | None = None,
    label_column: str = 'class',
    source_prefix: str = 'USR_',
    unmapped: Literal['error', 'background'] = 'error',
    seed: int = 0,
    categories: bool = True,
    progress: bool = True,
    max_nodata_fraction: float = 0.1,
    allow_overlap: bool = False,
    gsd: float | None = None,
    date: str | None = None,
) -> BuildReport:
    """Cut random labelled crops from GeoTIFF scenes into an EarthSynth-180K-layout corpus.

    Labels are either raster masks or vector files:

    * a raster mask (GeoTIFF or anything rasterio opens) holds label values in band 1;
      ``class_mapping`` maps them to vocabulary ids. If the mask is not on the scene's
      grid it is warped onto it (nearest neighbour) window by window. Pixel value 0 and the
      mask's nodata value are background unless ``class_mapping`` maps them.
    * a vector file (suffix in :data:`VECTOR_SUFFIXES`) is read with geopandas, reprojected
      to each scene's CRS and burned with :func:`rasterio.features.rasterize`, using
      ``class_mapping[feature[label_column]]``; overlapping features: the later one wins.
      Pixels outside every feature are background.

    Keys of ``class_mapping`` match label values by their text (``3``, ``3.0`` and ``"3"``
    are the same key), so JSON mappings work for raster masks too. Values are vocabulary
    ids or names (:data:`~torchgeo_earthsynth.vocabulary.VOCABULARY`).

    Images: ``bands`` (1-based, default the first three; a one-band scene is repeated into
    grey) are read window by window. uint8 data are kept as they are; other dtypes get a
    per-band linear stretch from the 2nd to the 98th percentile, computed once per scene on
    a read decimated to at most :data:`STRETCH_SAMPLE_SIZE` pixels a side (nodata and
    non-finite values ignored), then clipped to 0..255. A flat band becomes 0.

    With ``bands=None`` the scene's colour interpretation picks red, green and blue (a
    B,G,R,A scene gives bands 3, 2, 1), else the first three non-alpha bands. A band that
    holds only nodata is an error, as is a choice of bands that are all constant (flat
    crops); some constant bands are a warning.

    Nodata: pixels that are nodata (the scene's nodata value, mask or alpha band; NaN) in
    any chosen band never become labelled content: a window with a nodata share above
    ``max_nodata_fraction`` is rejected, and in the others nodata pixels become black
    image pixels with the background label.

    Crops: ``crops_per_scene`` random ``tile_size`` windows, at native resolution or
    resampled to ``gsd`` metres per pixel (bilinear when refining, average when
    coarsening; labels follow on the same grid). Windows do not overlap each other, nor
    the crops the corpus already lists for the same scene (read from the records'
    ``provenance``), unless ``allow_overlap`` (then only crops of the other split are
    avoided). So train and val never share pixels: they are split by scene, or, when a
    scene has crops in both, by disjoint windows (:attr:`BuildReport.split_by` says which).
    A window whose labelled (non-background) fraction is below ``min_labelled_fraction``
    is rejected and another drawn, up to :data:`TRIES_PER_CROP` tries per requested crop.
    File stems are ``<source_prefix><scene stem>_<crop index>``.

    Records: each crop's records carry ``provenance`` (scene path, pixel window
    ``[col_off, row_off, width, height]`` on the grid cropped, CRS, the crop's affine
    transform) and ``metadata`` (crop centre ``lon``/``lat`` in WGS84, ``gsd`` in metres
    from the transform, degree-based CRSs included, and the acquisition ``year``, ``month``,
    ``day`` from ``date`` or the scene's tags: acquisition-date tags first, then
    ``TIFFTAG_DATETIME``; null where unknown).

    Output: ``<output>/<split>/images``, ``masks`` (and the single-category samples when
    ``categories``) written with :func:`~torchgeo_earthsynth.datasets.layout.write_sample`;
    the split's JSONL is rewritten with its existing records first and the new ones
    appended. A stem that is already in the JSONL is refused before anything is written
    (use another ``source_prefix`` to add the same scenes again). The JSONL is written last,
    so an interrupted build leaves the corpus as it was (plus unlisted PNGs).

    Args:
        scenes: GeoTIFF scenes.
        labels: one label file shared by all scenes, or one per scene, in order.
        output: corpus root.
        class_mapping: label value (pixel value or attribute value) -> vocabulary id or name.
        split: split folder to write.
        crops_per_scene: crops wanted per scene.
        tile_size: crop side in pixels.
        min_labelled_fraction: minimum share of non-background pixels in a crop, 0..1.
        bands: 1-based band indexes giving R, G, B (or one band for grey).
        label_column: attribute of vector labels that holds the class.
        source_prefix: file-stem prefix naming the source (letters, digits, ``_``, ``-``).
        unmapped: ``'error'`` raises on a label value missing from ``class_mapping``;
            ``'background'`` maps it to 0.
        seed: seed of the crop positions (scene ``i`` uses ``(seed, i)``).
        categories: also write single-category samples (category augmentation).
        progress: show a tqdm progress bar over crops.
        max_nodata_fraction: maximum share of nodata pixels in a crop, 0..1.
        allow_overlap: let crops of this split overlap each other and the split's earlier
            crops of the same scene.
        gsd: resample scenes to this many metres per pixel (None: native resolution).
        date: acquisition date ``YYYY-MM-DD`` of every scene (None: from the scene's tags).

    Returns:
        A :class:`BuildReport`.

    Raises:
        ValueError: on bad arguments, unreadable or mismatched files, unmapped label values,
            scenes smaller than ``tile_size``, stems already in the split, a scene that no
            label overlaps, or bands that are all constant or all nodata.

    .. versionadded:: 0.1
    """
    if split not in ('train', 'val'):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if unmapped not in ('error', 'background'):
        raise ValueError(f"unmapped must be 'error' or 'background', got {unmapped!r}")
    if crops_per_scene < 1 or tile_size < 1:
        raise ValueError(
            f'crops_per_scene and tile_size must be >= 1, got {crops_per_scene} and {tile_size}'
        )
    if not 0 <= min_labelled_fraction <= 1:
        raise ValueError(f'min_labelled_fraction must be in [0, 1], got {min_labelled_fraction}')
    if not 0 <= max_nodata_fraction <= 1:
        raise ValueError(f'max_nodata_fraction must be in [0, 1], got {max_nodata_fraction}')
    if gsd is not None and not gsd > 0:
        raise ValueError(f'gsd must be a positive number of metres per pixel, got {gsd}')
    if date is not None:
        scene_date({}, date)  # check it before any work
    if not re.fullmatch(r'[A-Za-z0-9_-]+', source_prefix):
        raise ValueError(f'source_prefix {source_prefix!r} must be letters, digits, _ or -')
    scene_paths = [Path(s) for s in scenes]
    if not scene_paths:
        raise ValueError('no scenes given')
    label_paths = _pair_labels(scene_paths, labels)
    lookup = lookup_table(class_mapping)

    stems = [source_prefix + _SAFE.sub('-', p.stem) for p in scene_paths]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise ValueError(f'scenes share file stems {dupes}; rename them so crops do not collide')

    split_dir = Path(output) / split
    existing = _existing_records(split_dir)
    # full-sample stems are '<scene stem>_<crop index>'
    taken = {
        re.sub(r'_\d+$', '', Path(str(r.get('file_name'))).stem)
        for r in existing
        if isinstance(r, dict)
    }
    clash = sorted(set(stems) & taken)
    if clash:
        raise ValueError(
            f'{layout.jsonl_path(split_dir)} already lists crops of {clash}; pass '
            'another source_prefix or output to add them again'
        )

    other_dir = Path(output) / ('val' if split == 'train' else 'train')
    other = _taken(_listed(other_dir))
    own = _taken(existing)

    # check every scene and vector file before writing anything
    vector_files = {
        path: VectorFile(path, lookup, label_column, unmapped)
        for path in dict.fromkeys(label_paths)
        if path.suffix.lower() in VECTOR_SUFFIXES
    }
    options = SceneOptions(bands, gsd, date, lookup, unmapped, vector_files)
    for scene_path, label_path in zip(scene_paths, label_paths):
        with ExitStack() as stack:
            prepared = prepare_scene(scene_path, label_path, options, stack, check=True)
            if prepared.grid.width < tile_size or prepared.grid.height < tile_size:
                raise ValueError(
                    f'{scene_path}: scene is {prepared.grid.width}x{prepared.grid.height}'
                    f'{"" if gsd is None else f" at {gsd} m"}, smaller than tile_size={tile_size}'
                )

    report = BuildReport(
        split_dir=split_dir, existing_records=len(existing), requested=crops_per_scene
    )
    pixels: Counter[int] = Counter()
    records: list[dict[str, Any]] = []
    bar = tqdm(
        total=len(scene_paths) * crops_per_scene,
        desc='build-corpus',
        unit='crop',
        disable=not progress,
    )
    with bar:
        for index, (scene_path, label_path, stem) in enumerate(
            zip(scene_paths, label_paths, stems)
        ):
            bar.set_postfix_str(scene_path.name)
            key = str(scene_path.resolve())
            if key in other:
                report.shared_scenes[str(scene_path)] = len(other[key])
            # never the other split's pixels; this split's only when overlap is allowed
            avoid = list(other.get(key, []))
            mine = [] if allow_overlap else [*own.get(key, [])]
            with ExitStack() as stack:
                scene = prepare_scene(scene_path, label_path, options, stack)
                grid = scene.grid
                rng = np.random.default_rng((seed, index))
                count = 0
                for window in random_windows(
                    rng, grid, tile_size, crops_per_scene * TRIES_PER_CROP
                ):
                    transform = window_transform(window, grid.transform)
                    box = window_bbox(transform, tile_size, tile_size)
                    if any(intersects(box, b) for b in avoid + mine):
                        report.overlapping += 1
                        continue
                    data = grid.read(scene.bands, window=window, masked=True)
                    nodata = nodata_pixels(data)
                    if np.count_nonzero(nodata) > max_nodata_fraction * nodata.size:
                        report.nodata_rejected += 1
                        continue
                    mask = scene.labels.window(window)
                    mask[nodata] = BACKGROUND
                    if np.count_nonzero(mask) < min_labelled_fraction * mask.size:
                        report.rejected += 1
                        continue
                    image = to_uint8(data.data, scene.stretch)
                    image[nodata] = 0
                    name = f'{stem}_{count:04d}'
                    new = layout.write_sample(split_dir, name, image, mask, categories=categories)
                    col, row = int(window.col_off), int(window.row_off)
                    fields = crop_fields(
                        key, grid.crs, transform, (col, row, tile_size, tile_size), scene.date
                    )
                    records.extend({**r, **fields} for r in new)
                    report.windows[name] = (str(scene_path), window)
                    if not allow_overlap:
                        mine.append(box)
                    report.category_samples += len(new) - 1
                    ids, counts = np.unique(mask, return_counts=True)
                    pixels.update(dict(zip(ids.tolist(), counts.tolist())))
                    count += 1
                    bar.update()
                    if count == crops_per_scene:
                        break
                # keep the bar's total honest when a scene falls short
                bar.update(crops_per_scene - count)
            report.per_scene[str(scene_path)] = count
            report.written += count
            report.scenes += 1
    layout.write_jsonl(layout.jsonl_path(split_dir), [*existing, *records])
    report.class_pixels = {VOCABULARY[int(i)]: int(n) for i, n in sorted(pixels.items())}
    return report


__all__ = ('BuildReport', 'build_corpus')
