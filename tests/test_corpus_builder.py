# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Tests of the corpus builder: GeoTIFF scenes plus raster or vector labels -> corpus."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from PIL import Image
from pyproj import Transformer
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin
from shapely.geometry import Polygon

from torchgeo_earthsynth.corpus import build_corpus, main
from torchgeo_earthsynth.datasets import EarthSynth180K, layout
from torchgeo_earthsynth.vocabulary import CLASS_IDS, prompt_from_mask

SIZE = 200
CRS = 'EPSG:32633'
TRANSFORM = from_origin(500_000, 5_000_000, 10, 10)  # 10 m pixels
ROAD = (60, 140, 40, 120)  # row0, row1, col0, col1 of the road polygon's pixel block
BUILDING = (150, 190, 150, 190)


def write_tif(path: Path, bands: np.ndarray, transform=TRANSFORM, crs=CRS, nodata=None) -> Path:
    with rasterio.open(
        path,
        'w',
        driver='GTiff',
        width=bands.shape[2],
        height=bands.shape[1],
        count=bands.shape[0],
        dtype=bands.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as dst:
        dst.write(bands)
    return path


def grid() -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing='xy')  # cols, rows


@pytest.fixture
def uint8_scene(tmp_path: Path) -> Path:
    """b1 = column, b2 = row, b3 = 50, b4 = 200: every pixel says where it is."""
    cols, rows = grid()
    bands = np.stack([cols, rows, np.full_like(cols, 50), np.full_like(cols, 200)])
    return write_tif(tmp_path / 'scene_a.tif', bands.astype(np.uint8))


@pytest.fixture
def uint16_scene(tmp_path: Path) -> Path:
    """b1 = 100 * column, b2 flat, b3 = 100 * row, b4 noise."""
    cols, rows = grid()
    noise = np.random.default_rng(0).integers(0, 60_000, cols.shape)
    bands = np.stack([cols * 100, np.full_like(cols, 1000), rows * 100, noise])
    return write_tif(tmp_path / 'scene b.tif', bands.astype(np.uint16))


def block_polygon_4326(block: tuple[int, int, int, int]) -> Polygon:
    """The pixel block's outline, in lon/lat."""
    row0, row1, col0, col1 = block
    to_lonlat = Transformer.from_crs(CRS, 'EPSG:4326', always_xy=True)
    corners = [
        TRANSFORM @ (c, r) for c, r in ((col0, row0), (col1, row0), (col1, row1), (col0, row1))
    ]
    return Polygon([to_lonlat.transform(x, y) for x, y in corners])


@pytest.fixture
def geojson(tmp_path: Path) -> Path:
    frame = gpd.GeoDataFrame(
        {'class': ['road', 'building']},
        geometry=[block_polygon_4326(ROAD), block_polygon_4326(BUILDING)],
        crs='EPSG:4326',
    )
    path = tmp_path / 'labels.geojson'
    frame.to_file(path, driver='GeoJSON')
    return path


def expected_mask(blocks: dict[int, tuple[int, int, int, int]]) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    for class_id, (row0, row1, col0, col1) in blocks.items():
        mask[row0:row1, col0:col1] = class_id
    return mask


def edges(blocks: dict[int, tuple[int, int, int, int]]) -> np.ndarray:
    """Pixels within one pixel of a block edge (reprojection may round these either way)."""
    near = np.zeros((SIZE, SIZE), dtype=bool)
    for row0, row1, col0, col1 in blocks.values():
        for r in (row0, row1):
            near[max(r - 1, 0) : r + 1, col0 - 1 : col1 + 1] = True
        for c in (col0, col1):
            near[row0 - 1 : row1 + 1, max(c - 1, 0) : c + 1] = True
    return near


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_vector_labels_end_to_end(tmp_path: Path, uint8_scene: Path, geojson: Path) -> None:
    out = tmp_path / 'corpus'
    report = build_corpus(
        [uint8_scene],
        geojson,
        out,
        {'road': 4, 'building': 'building'},
        crops_per_scene=6,
        tile_size=64,
        min_labelled_fraction=0.3,
        bands=(4, 1, 2),
        progress=False,
        allow_overlap=True,  # six 30 %-labelled 64 px crops need more labels than 200 px hold
    )
    assert report.written == 6 and report.scenes == 1 and len(report.windows) == 6
    assert report.per_scene == {str(uint8_scene): 6} and not report.shortfalls
    blocks = {4: ROAD, 8: BUILDING}
    truth, near = expected_mask(blocks), edges(blocks)
    road_px = 0
    for stem, (scene, window) in report.windows.items():
        assert stem.startswith('USR_scene_a_') and scene == str(uint8_scene)
        rows = slice(window.row_off, window.row_off + 64)
        cols = slice(window.col_off, window.col_off + 64)
        mask = read_png(out / 'train' / 'masks' / f'{stem}.png')
        assert mask.shape == (64, 64) and mask.dtype == np.uint8
        sure = ~near[rows, cols]
        np.testing.assert_array_equal(mask[sure], truth[rows, cols][sure])
        assert np.count_nonzero(mask) >= 0.3 * mask.size
        road_px += int((mask == 4).sum())
        # bands (4, 1, 2): constant 200, then column, then row of the scene
        image = read_png(out / 'train' / 'images' / f'{stem}.png')
        assert (image[..., 0] == 200).all()
        np.testing.assert_array_equal(
            image[0, :, 1], np.arange(window.col_off, window.col_off + 64)
        )
        np.testing.assert_array_equal(
            image[:, 0, 2], np.arange(window.row_off, window.row_off + 64)
        )
    assert report.class_pixels['road'] == road_px > 0
    assert sum(report.class_pixels.values()) == 6 * 64 * 64

    full = EarthSynth180K(out, mode='full')
    both = EarthSynth180K(out, mode='both')
    assert len(full) == 6 and len(both) == 6 + report.category_samples
    assert report.category_samples >= 6
    for i in range(len(both)):
        sample = both[i]
        assert sample['image'].shape == (3, 64, 64) and sample['mask'].shape == (64, 64)
        assert sample['prompt'] == prompt_from_mask(sample['mask'])
        assert sample['source'] == 'other'


def test_polygon_centre_reprojected(tmp_path: Path, uint8_scene: Path, geojson: Path) -> None:
    # one crop covering the whole scene: the road block's centre must carry the road id
    report = build_corpus(
        [uint8_scene],
        [geojson],
        tmp_path / 'c',
        {'road': 'road', 'building': 0},
        crops_per_scene=1,
        tile_size=SIZE,
        progress=False,
    )
    (stem,) = report.windows
    mask = read_png(tmp_path / 'c' / 'train' / 'masks' / f'{stem}.png')
    assert mask[100, 80] == CLASS_IDS['road']
    assert mask[170, 170] == 0  # the building was mapped to background
    assert mask[20, 20] == 0 and mask[100, 10] == 0
    assert abs(int((mask == 4).sum()) - 80 * 80) <= 4 * 80  # within one pixel per edge


def test_min_labelled_fraction_and_shortfall(
    tmp_path: Path, uint8_scene: Path, geojson: Path
) -> None:
    report = build_corpus(
        [uint8_scene],
        geojson,
        tmp_path / 'c',
        {'road': 4, 'building': 8},
        crops_per_scene=5,
        tile_size=32,
        min_labelled_fraction=0.9,
        progress=False,
        allow_overlap=True,  # five disjoint 90 %-labelled crops barely fit the two blocks
    )
    assert report.written == 5 and report.rejected > 0
    for stem in report.windows:
        mask = read_png(tmp_path / 'c' / 'train' / 'masks' / f'{stem}.png')
        assert np.count_nonzero(mask) >= 0.9 * mask.size
    # no 100x100 window can be 90 % labelled: every try is rejected and the scene falls short
    short = build_corpus(
        [uint8_scene],
        geojson,
        tmp_path / 'd',
        {'road': 4, 'building': 8},
        crops_per_scene=2,
        tile_size=100,
        min_labelled_fraction=0.9,
        progress=False,
    )
    assert short.written == 0 and short.rejected == 20
    assert short.shortfalls == {str(uint8_scene): 0}
    assert 'rejected 20' in short.summary()


def test_uint16_percentile_stretch(tmp_path: Path, uint16_scene: Path, geojson: Path) -> None:
    report = build_corpus(
        [uint16_scene],
        geojson,
        tmp_path / 'c',
        {'road': 4, 'building': 8},
        crops_per_scene=1,
        tile_size=SIZE,
        min_labelled_fraction=0,
        categories=False,
        progress=False,
    )
    (stem,) = report.windows
    assert stem == 'USR_scene-b_0000'  # unsafe characters replaced
    image = read_png(tmp_path / 'c' / 'train' / 'images' / f'{stem}.png')
    values = np.arange(SIZE) * 100.0
    low, high = np.percentile(np.tile(values, SIZE), [2, 98])
    expected = np.clip(np.round((values - low) / (high - low) * 255), 0, 255)
    np.testing.assert_array_equal(image[0, :, 0], expected)  # band 1 along columns
    np.testing.assert_array_equal(image[:, 0, 2], expected)  # band 3 along rows
    assert (image[..., 1] == 0).all()  # the flat band 2
    assert image[..., 0].min() == 0 and image[..., 0].max() == 255


def test_float_single_band_scene(tmp_path: Path, geojson: Path) -> None:
    cols, _ = grid()
    band = cols.astype(np.float32)[None]
    band[0, :, :10] = np.nan  # ignored by the stretch, written as 0
    scene = write_tif(tmp_path / 'grey.tif', band)
    report = build_corpus(
        [scene],
        geojson,
        tmp_path / 'c',
        {'road': 4, 'building': 8},
        crops_per_scene=1,
        tile_size=SIZE,
        progress=False,
    )
    image = read_png(tmp_path / 'c' / 'train' / 'images' / f'{next(iter(report.windows))}.png')
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 0] == image[..., 2]).all()
    low, high = np.percentile(np.tile(np.arange(10, SIZE), SIZE), [2, 98])
    expected = np.clip(np.round((np.arange(SIZE) - low) / (high - low) * 255), 0, 255)
    expected[:10] = 0
    np.testing.assert_array_equal(image[5, :, 0], expected)


def test_raster_mask_labels(tmp_path: Path, uint8_scene: Path) -> None:
    # the mask is on a coarser 20 m grid, so it is warped onto the scene's 10 m grid
    coarse = np.zeros((1, 100, 100), dtype=np.uint8)
    coarse[0, 20:60, 10:50] = 3  # scene rows 40..120, cols 20..100
    coarse[0, 70:90, 70:90] = 7  # scene rows 140..180, cols 140..180
    coarse[0, 0:10, :] = 255  # nodata: background, needs no mapping
    coarse_grid = from_origin(500_000, 5_000_000, 20, 20)
    mask_path = write_tif(tmp_path / 'mask.tif', coarse, transform=coarse_grid, nodata=255)
    report = build_corpus(
        [uint8_scene],
        [mask_path],
        tmp_path / 'c',
        {'3': 'water', 7: 9},
        crops_per_scene=1,
        tile_size=SIZE,
        min_labelled_fraction=0,
        progress=False,
    )
    mask = read_png(tmp_path / 'c' / 'train' / 'masks' / 'USR_scene_a_0000.png')
    np.testing.assert_array_equal(
        mask, expected_mask({6: (40, 120, 20, 100), 9: (140, 180, 140, 180)})
    )
    records = [json.loads(line) for line in layout.jsonl_path(tmp_path / 'c' / 'train').open()]
    assert records[0]['text'] == 'A satellite image of water, forest land'
    assert report.class_pixels == {
        'background': SIZE * SIZE - 80 * 80 - 40 * 40,
        'water': 80 * 80,
        'forest land': 40 * 40,
    }


def test_unmapped_values(tmp_path: Path, uint8_scene: Path, geojson: Path) -> None:
    with pytest.raises(ValueError, match=r"labels\.geojson, column 'class'.*\['building'\]"):
        build_corpus(
            [uint8_scene], geojson, tmp_path / 'c', {'road': 4}, progress=False, tile_size=64
        )
    with pytest.raises(ValueError, match=r"no column 'kind'.*columns: \['class'\]"):
        build_corpus(
            [uint8_scene], geojson, tmp_path / 'c', {'road': 4}, label_column='kind', progress=False
        )
    report = build_corpus(
        [uint8_scene],
        geojson,
        tmp_path / 'c',
        {'road': 4},
        unmapped='background',
        crops_per_scene=1,
        tile_size=SIZE,
        progress=False,
    )
    assert set(report.class_pixels) == {'background', 'road'}

    bad = np.zeros((1, SIZE, SIZE), dtype=np.uint8)
    bad[0, :50, :50] = 5
    mask_path = write_tif(tmp_path / 'bad.tif', bad)
    with pytest.raises(ValueError, match=r'bad\.tif: pixel value 5 \(band 1\) is not in'):
        build_corpus(
            [uint8_scene],
            mask_path,
            tmp_path / 'e',
            {1: 4},
            tile_size=SIZE,
            crops_per_scene=1,
            min_labelled_fraction=0,
            progress=False,
        )
    with pytest.raises(ValueError, match="'rivers' is not a vocabulary class name"):
        build_corpus([uint8_scene], mask_path, tmp_path / 'e', {5: 'rivers'}, progress=False)
    with pytest.raises(ValueError, match=r'not a vocabulary id in \[0, 66\]'):
        build_corpus([uint8_scene], mask_path, tmp_path / 'e', {5: 67}, progress=False)
    with pytest.raises(ValueError, match=r'= 4.5: expected a vocabulary id or class name'):
        build_corpus([uint8_scene], mask_path, tmp_path / 'e', {5: 4.5}, progress=False)


def test_bad_arguments(tmp_path: Path, uint8_scene: Path, geojson: Path) -> None:
    mapping = {'road': 4, 'building': 8}
    with pytest.raises(ValueError, match=r'scene_a\.tif: scene is 200x200, smaller than'):
        build_corpus([uint8_scene], geojson, tmp_path / 'c', mapping, tile_size=256, progress=False)
    with pytest.raises(ValueError, match=r'band\(s\) \[5\] out of range; the scene has 4'):
        build_corpus(
            [uint8_scene],
            geojson,
            tmp_path / 'c',
            mapping,
            bands=(1, 2, 5),
            tile_size=32,
            progress=False,
        )
    with pytest.raises(ValueError, match='got 2 label files for 3 scenes'):
        build_corpus([uint8_scene] * 3, [geojson, geojson], tmp_path / 'c', mapping)
    with pytest.raises(ValueError, match='scenes share file stems'):
        build_corpus([uint8_scene] * 2, geojson, tmp_path / 'c', mapping)


def test_append_and_refuse_clash(tmp_path: Path, uint8_scene: Path, geojson: Path) -> None:
    mapping = {'road': 4, 'building': 8}
    kwargs = dict(crops_per_scene=2, tile_size=32, progress=False, categories=False)
    build_corpus([uint8_scene], geojson, tmp_path, mapping, **kwargs)
    second = build_corpus([uint8_scene], geojson, tmp_path, mapping, source_prefix='TWO_', **kwargs)
    assert second.existing_records == 2
    lines = layout.jsonl_path(tmp_path / 'train').read_text().splitlines()
    stems = sorted(Path(json.loads(line)['file_name']).stem for line in lines)
    assert stems == ['TWO_scene_a_0000', 'TWO_scene_a_0001', 'USR_scene_a_0000', 'USR_scene_a_0001']
    with pytest.raises(ValueError, match=r"already lists crops of \['USR_scene_a'\]"):
        build_corpus([uint8_scene], geojson, tmp_path, mapping, **kwargs)
    assert len(EarthSynth180K(tmp_path)) == 4


def test_cli_main(
    tmp_path: Path,
    uint8_scene: Path,
    uint16_scene: Path,
    geojson: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mapping_file = tmp_path / 'mapping.json'
    mapping_file.write_text(json.dumps({'road': 'road', 'building': 8}))
    out = tmp_path / 'out'
    main(
        [
            '--scenes',
            str(uint8_scene),
            str(uint16_scene),
            '--labels',
            str(geojson),
            '--mapping',
            str(mapping_file),
            '--output',
            str(out),
            '--split',
            'val',
            '--crops',
            '3',
            '--tile-size',
            '32',
            '--min-labelled',
            '0.2',
            '--prefix',
            'CLI_',
            '--no-progress',
        ]
    )
    summary = capsys.readouterr().out.strip()
    assert summary.count('\n') == 0
    assert summary.startswith(f'{out / "val"}: wrote 6 crops')
    dataset = EarthSynth180K(out, split='val', mode='full')
    assert len(dataset) == 6
    assert all(dataset[i]['mask'].count_nonzero() >= 0.2 * 32 * 32 for i in range(6))

    main(
        [
            '--scenes',
            str(uint8_scene),
            '--labels',
            str(geojson),
            '--mapping',
            '{"road": 4, "building": 8}',
            '--output',
            str(out),
            '--crops',
            '1',
            '--tile-size',
            '32',
            '--no-categories',
            '--no-progress',
        ]
    )
    assert 'wrote 1 crops (+0 category samples)' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(
            [
                '--scenes',
                str(uint8_scene),
                '--labels',
                str(geojson),
                '--mapping',
                '{"road": 4}',
                '--output',
                str(tmp_path / 'other'),
                '--no-progress',
            ]
        )
    err = capsys.readouterr().err
    assert "value(s) ['building'] are not in --mapping" in err  # CLI flags, not Python names
    assert '--unmapped background' in err and 'class_mapping' not in err
    with pytest.raises(SystemExit):
        main(
            [
                '--scenes',
                str(uint8_scene),
                '--labels',
                str(geojson),
                '--mapping',
                '{road: 4}',
                '--output',
                str(out),
            ]
        )
    assert 'inline --mapping: not valid JSON' in capsys.readouterr().err


def test_earthsynth_command_dispatch(tmp_path: Path, uint8_scene: Path, geojson: Path) -> None:
    from torchgeo_earthsynth.cli import main as earthsynth

    earthsynth(
        [
            'build-corpus',
            '--scenes',
            str(uint8_scene),
            '--labels',
            str(geojson),
            '--mapping',
            '{"road": 4, "building": 8}',
            '--output',
            str(tmp_path / 'o'),
            '--crops',
            '2',
            '--tile-size',
            '32',
            '--no-progress',
        ]
    )
    assert len(EarthSynth180K(tmp_path / 'o')) == 2


# ---------------------------------------------------------------------- faults (issue 14)
MAPPING = {'road': 4, 'building': 8}


def records_of(out: Path, split: str = 'train') -> list[dict]:
    return [json.loads(line) for line in layout.jsonl_path(out / split).open()]


def far_labels(tmp_path: Path, name: str, frame: gpd.GeoDataFrame) -> Path:
    path = tmp_path / name
    frame.to_file(path, driver='GeoJSON')
    return path


def test_no_label_overlaps_the_scene(tmp_path: Path, uint8_scene: Path) -> None:
    shifted = [
        Polygon([(x + 100_000, y) for x, y in block_polygon_utm(b)]) for b in (ROAD, BUILDING)
    ]
    far = gpd.GeoDataFrame({'class': ['road', 'building']}, geometry=shifted, crs=CRS)
    far_path = tmp_path / 'far.gpkg'
    far.to_file(far_path, driver='GPKG')
    with pytest.raises(ValueError, match=r'scene_a\.tif: no label of .*far\.gpkg overlaps'):
        build_corpus([uint8_scene], far_path, tmp_path / 'c', MAPPING, progress=False)
    assert not (tmp_path / 'c' / 'train' / 'train.jsonl').exists()  # nothing written

    # projected coordinates in a GeoJSON file, which is WGS84 by definition
    utm = gpd.GeoDataFrame(
        {'class': ['road']}, geometry=[Polygon(block_polygon_utm(ROAD))], crs='EPSG:4326'
    )
    path = far_labels(tmp_path, 'utm.geojson', utm)
    with pytest.raises(ValueError, match='look projected') as error:
        build_corpus([uint8_scene], path, tmp_path / 'c', MAPPING, progress=False)
    assert 'no label of' in str(error.value)

    empty = gpd.GeoDataFrame({'class': []}, geometry=[], crs='EPSG:4326')
    path = far_labels(tmp_path, 'empty.geojson', empty)
    with pytest.raises(ValueError, match='holds no features'):
        build_corpus([uint8_scene], path, tmp_path / 'c', MAPPING, progress=False)

    # a raster mask 100 km away, and the CLI exits non-zero
    mask_path = write_tif(
        tmp_path / 'far.tif',
        np.ones((1, SIZE, SIZE), np.uint8),
        transform=from_origin(600_000, 5_000_000, 10, 10),
    )
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                '--scenes',
                str(uint8_scene),
                '--labels',
                str(mask_path),
                '--mapping',
                '{"1": 4}',
                '--output',
                str(tmp_path / 'c'),
                '--no-progress',
            ]
        )
    assert exit_info.value.code != 0


def block_polygon_utm(block: tuple[int, int, int, int]) -> list[tuple[float, float]]:
    row0, row1, col0, col1 = block
    return [TRANSFORM @ (c, r) for c, r in ((col0, row0), (col1, row0), (col1, row1), (col0, row1))]


def test_cli_exits_non_zero_when_nothing_is_written(
    tmp_path: Path, uint8_scene: Path, geojson: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        '--scenes',
        str(uint8_scene),
        '--labels',
        str(geojson),
        '--mapping',
        json.dumps(MAPPING),
        '--output',
        str(tmp_path / 'c'),
        '--tile-size',
        '100',
        '--min-labelled',
        '0.95',
        '--no-progress',
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 1
    assert 'no crop was written' in capsys.readouterr().err


def test_nodata_is_never_labelled_content(tmp_path: Path) -> None:
    cols, rows = grid()
    bands = np.stack([cols * 100, rows * 100, np.full_like(cols, 3000)]).astype(np.uint16)
    bands[:, :, 50:] = 65535  # three quarters nodata
    scene = write_tif(tmp_path / 'holes.tif', bands, nodata=65535)
    labels = np.full((1, SIZE, SIZE), 1, np.uint8)  # labelled everywhere, nodata included
    mask_path = write_tif(tmp_path / 'mask.tif', labels)
    report = build_corpus(
        [scene],
        mask_path,
        tmp_path / 'c',
        {1: 'building'},
        crops_per_scene=8,
        tile_size=40,
        allow_overlap=True,
        progress=False,
        max_nodata_fraction=0.25,
    )
    assert report.nodata_rejected > 0
    assert report.written > 0
    for stem, (_, window) in report.windows.items():
        nodata = np.zeros((40, 40), bool)
        nodata[:, max(0, 50 - window.col_off) :] = True
        assert nodata.mean() <= 0.25
        image = read_png(tmp_path / 'c' / 'train' / 'images' / f'{stem}.png')
        mask = read_png(tmp_path / 'c' / 'train' / 'masks' / f'{stem}.png')
        assert (mask[nodata] == 0).all() and (mask[~nodata] == CLASS_IDS['building']).all()
        assert (image[nodata] == 0).all()  # black, never white
    # all nodata: a clear error
    write_tif(tmp_path / 'void.tif', np.full((1, SIZE, SIZE), 65535, np.uint16), nodata=65535)
    with pytest.raises(ValueError, match=r'void\.tif: band 1 holds only nodata'):
        build_corpus([tmp_path / 'void.tif'], mask_path, tmp_path / 'd', {1: 8}, progress=False)


@pytest.mark.filterwarnings('ignore::rasterio.errors.NotGeoreferencedWarning')
def test_scene_without_crs(tmp_path: Path) -> None:
    cols, rows = grid()
    scene = write_tif(
        tmp_path / 'plain.tif',
        np.stack([cols, rows, cols]).astype(np.uint8),
        crs=None,
        transform=from_origin(0, 0, 1, 1),
    )
    labels = np.zeros((1, SIZE, SIZE), np.uint8)
    labels[0, :100] = 1
    same = write_tif(tmp_path / 'same.tif', labels, crs=None)
    report = build_corpus(
        [scene], same, tmp_path / 'c', {1: 4}, crops_per_scene=1, tile_size=SIZE, progress=False
    )
    mask = read_png(tmp_path / 'c' / 'train' / 'masks' / f'{next(iter(report.windows))}.png')
    assert (mask[:100] == 4).all() and (mask[100:] == 0).all()
    record = records_of(tmp_path / 'c')[0]
    assert record['provenance']['crs'] is None
    assert record['metadata']['lon'] is None and record['metadata']['gsd'] is None
    smaller = write_tif(tmp_path / 'small.tif', labels[:, :50, :50], crs=None)
    with pytest.raises(ValueError, match='without a CRS') as error:
        build_corpus([scene], smaller, tmp_path / 'd', {1: 4}, progress=False, tile_size=32)
    assert 'must share a grid' not in str(error.value)
    assert 'small.tif: the mask is 50x50 and the scene' in str(error.value)


def test_constant_bands_and_colour_interpretation(tmp_path: Path, geojson: Path) -> None:
    flat = write_tif(tmp_path / 'flat.tif', np.full((3, SIZE, SIZE), 7, np.uint8))
    with pytest.raises(ValueError, match=r'flat\.tif: band\(s\) \[1, 2, 3\] are constant'):
        build_corpus([flat], geojson, tmp_path / 'c', MAPPING, progress=False)
    cols, rows = grid()
    bgr = np.stack([np.full_like(cols, 30), rows, cols, np.full_like(cols, 255)]).astype(np.uint8)
    path = write_tif(tmp_path / 'bgra.tif', bgr)
    with rasterio.open(path, 'r+') as dst:
        dst.colorinterp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.alpha]
    report = build_corpus(
        [path], geojson, tmp_path / 'c', MAPPING, crops_per_scene=1, tile_size=SIZE, progress=False
    )
    image = read_png(tmp_path / 'c' / 'train' / 'images' / f'{next(iter(report.windows))}.png')
    np.testing.assert_array_equal(image[0, :, 0], np.arange(SIZE))  # red = band 3
    np.testing.assert_array_equal(image[:, 0, 1], np.arange(SIZE))  # green = band 2
    assert (image[..., 2] == 30).all()  # blue = band 1


def test_crops_disjoint_and_splits_apart(tmp_path: Path, uint8_scene: Path, geojson: Path) -> None:
    kwargs = dict(tile_size=32, min_labelled_fraction=0.05, progress=False, categories=False)
    val = build_corpus(
        [uint8_scene], geojson, tmp_path, MAPPING, split='val', crops_per_scene=4, **kwargs
    )
    assert val.split_by == 'scene' and val.written == 4
    train = build_corpus([uint8_scene], geojson, tmp_path, MAPPING, crops_per_scene=6, **kwargs)
    assert train.split_by == 'window' and train.shared_scenes == {str(uint8_scene): 4}
    assert 'split by disjoint windows' in train.summary()
    windows = [w for _, w in [*val.windows.values(), *train.windows.values()]]
    for i, a in enumerate(windows):
        for b in windows[i + 1 :]:
            apart_cols = a.col_off + 32 <= b.col_off or b.col_off + 32 <= a.col_off
            apart_rows = a.row_off + 32 <= b.row_off or b.row_off + 32 <= a.row_off
            assert apart_cols or apart_rows


def test_provenance_and_metadata(
    tmp_path: Path, uint8_scene: Path, geojson: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with rasterio.open(uint8_scene, 'r+') as dst:
        dst.update_tags(TIFFTAG_DATETIME='2019:03:04 10:00:00')
    out = tmp_path / 'c'
    report = build_corpus(
        [uint8_scene],
        geojson,
        out,
        MAPPING,
        crops_per_scene=2,
        tile_size=64,
        min_labelled_fraction=0.1,
        progress=False,
    )
    to_lonlat = Transformer.from_crs(CRS, 'EPSG:4326', always_xy=True)
    records = records_of(out)
    full = [r for r in records if 'category_masks' in r]
    assert len(full) == 2
    for record in records:
        assert set(record['provenance']) == {'scene', 'window', 'crs', 'transform'}
    for record, (stem, (_, window)) in zip(full, report.windows.items()):
        prov, meta = record['provenance'], record['metadata']
        assert record['file_name'] == f'images/{stem}.png'
        assert prov['scene'] == str(uint8_scene.resolve())
        assert prov['window'] == [window.col_off, window.row_off, 64, 64]
        assert prov['crs'] == 'EPSG:32633'
        x0, y0 = TRANSFORM @ (window.col_off, window.row_off)
        assert prov['transform'] == [10.0, 0.0, x0, 0.0, -10.0, y0]
        lon, lat = to_lonlat.transform(x0 + 320, y0 - 320)
        assert meta['lon'] == pytest.approx(lon) and meta['lat'] == pytest.approx(lat)
        assert meta['gsd'] == pytest.approx(10.0)
        assert (meta['year'], meta['month'], meta['day']) == (2019, 3, 4)
    sample = EarthSynth180K(out)[0]
    expected = [full[0]['metadata'][k] for k in ('lon', 'lat', 'gsd')]
    assert sample['metadata'][:3].tolist() == pytest.approx(expected)
    assert sample['metadata'][3].isnan()  # cloud cover: unknown
    assert sample['metadata'][4:].tolist() == [2019, 3, 4]

    # an acquisition tag wins over TIFFTAG_DATETIME, and --date over both
    with rasterio.open(uint8_scene, 'r+') as dst:
        dst.update_tags(ACQUISITIONDATE='2020-07-15')
    build_corpus(
        [uint8_scene],
        geojson,
        tmp_path / 'd',
        MAPPING,
        crops_per_scene=1,
        tile_size=64,
        progress=False,
    )
    assert records_of(tmp_path / 'd')[0]['metadata']['month'] == 7
    build_corpus(
        [uint8_scene],
        geojson,
        tmp_path / 'e',
        MAPPING,
        crops_per_scene=1,
        tile_size=64,
        progress=False,
        date='2021-12-01',
    )
    assert records_of(tmp_path / 'e')[0]['metadata']['year'] == 2021
    with pytest.raises(SystemExit):
        main(
            [
                '--scenes',
                str(uint8_scene),
                '--labels',
                str(geojson),
                '--mapping',
                json.dumps(MAPPING),
                '--output',
                str(tmp_path / 'f'),
                '--date',
                '2021-13-01',
            ]
        )
    assert "--date = '2021-13-01': expected a date YYYY-MM-DD" in capsys.readouterr().err


def test_degree_crs_gsd(tmp_path: Path, geojson: Path) -> None:
    cols, rows = grid()
    step = 0.0001
    scene = write_tif(
        tmp_path / 'lonlat.tif',
        np.stack([cols, rows, cols]).astype(np.uint8),
        crs='EPSG:4326',
        transform=from_origin(10.0, 45.0, step, step),
    )
    frame = gpd.GeoDataFrame(
        {'class': ['road']},
        geometry=[Polygon([(10.001, 44.999), (10.015, 44.999), (10.015, 44.985)])],
        crs='EPSG:4326',
    )
    labels = far_labels(tmp_path, 'tri.geojson', frame)
    build_corpus(
        [scene],
        labels,
        tmp_path / 'c',
        {'road': 4},
        crops_per_scene=1,
        tile_size=SIZE,
        progress=False,
    )
    meta = records_of(tmp_path / 'c')[0]['metadata']
    assert meta['lon'] == pytest.approx(10.01) and meta['lat'] == pytest.approx(44.99)
    metres = np.radians(step) * 6_371_008.8
    assert meta['gsd'] == pytest.approx(metres * np.sqrt(np.cos(np.radians(44.99))), rel=1e-4)


def test_gsd_resampling(
    tmp_path: Path, uint8_scene: Path, geojson: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = build_corpus(
        [uint8_scene],
        geojson,
        tmp_path / 'c',
        MAPPING,
        crops_per_scene=1,
        tile_size=SIZE // 2,
        gsd=20,
        progress=False,
    )
    (stem,) = report.windows
    record = records_of(tmp_path / 'c')[0]
    assert record['metadata']['gsd'] == pytest.approx(20)
    assert record['provenance']['transform'][0] == 20
    image = read_png(tmp_path / 'c' / 'train' / 'images' / f'{stem}.png')
    # band 1 is the column: averaging 2x2 pixels gives 2c + 0.5, rounded by GDAL
    assert abs(int(image[0, 10, 0]) - 20) <= 1 and abs(int(image[0, 60, 0]) - 120) <= 1
    mask = read_png(tmp_path / 'c' / 'train' / 'masks' / f'{stem}.png')
    assert (mask == 4).sum() == pytest.approx(40 * 40, abs=4 * 40)  # the 80x80 road at 20 m
    with pytest.raises(SystemExit):
        main(
            [
                '--scenes',
                str(uint8_scene),
                '--labels',
                str(geojson),
                '--mapping',
                json.dumps(MAPPING),
                '--output',
                str(tmp_path / 'd'),
                '--gsd',
                '20',
                '--tile-size',
                '128',
                '--no-progress',
            ]
        )
    assert 'at 20.0 m, smaller than --tile-size 128' in capsys.readouterr().err


def test_files_follow_the_umask(tmp_path: Path, uint8_scene: Path, geojson: Path) -> None:
    old = os.umask(0o022)
    try:
        build_corpus(
            [uint8_scene],
            geojson,
            tmp_path / 'c',
            MAPPING,
            crops_per_scene=1,
            tile_size=64,
            progress=False,
        )
    finally:
        os.umask(old)
    split = tmp_path / 'c' / 'train'
    files = [p for p in split.rglob('*') if p.is_file()]
    assert files and {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o644}
    folders = [split, *(p for p in split.rglob('*') if p.is_dir())]
    assert {stat.S_IMODE(p.stat().st_mode) for p in folders} == {0o755}
