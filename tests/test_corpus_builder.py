# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Tests of the corpus builder: GeoTIFF scenes plus raster or vector labels -> corpus."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from PIL import Image
from pyproj import Transformer
from rasterio.transform import from_origin
from shapely.geometry import Polygon

from torchgeo_earthsynth.corpus_builder import build_corpus, main
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
    assert "value(s) ['building'] are not in class_mapping" in capsys.readouterr().err
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
