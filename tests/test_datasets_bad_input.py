# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""EarthSynth180K against hostile input (issue 14) and its metadata key (issue 11)."""

import io
import json
import math
import os
import shutil
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchgeo.datasets import DatasetNotFoundError

from torchgeo_earthsynth.conditions import METADATA_FIELDS
from torchgeo_earthsynth.datasets import EarthSynth180K

FAKE = Path(__file__).parent / 'data' / 'earthsynth180k'
GSD = METADATA_FIELDS.index('gsd')


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A writable copy of the fake extracted corpus (train with JSONL, val without)."""
    for split in ('train', 'val'):
        shutil.copytree(FAKE / split, tmp_path / 'data' / split)
    return tmp_path / 'data'


def encode(array: np.ndarray, fmt: str = 'PNG') -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def claim_size(png: bytes, width: int, height: int) -> bytes:
    """The PNG with its IHDR chunk rewritten to claim ``width`` x ``height`` (CRC fixed)."""
    ihdr = bytearray(png[16:29])  # the chunk's data: width, height, depth, colour, ...
    ihdr[0:8] = struct.pack('>II', width, height)
    crc = struct.pack('>I', zlib.crc32(b'IHDR' + bytes(ihdr)))
    return png[:16] + bytes(ihdr) + crc + png[33:]


# ---------------------------------------------------------------------- 1. decompression bombs


def test_decompression_bomb_is_a_clear_error_or_a_counted_skip(root: Path) -> None:
    path = root / 'train' / 'images' / 'DG_629683_0.png'
    path.write_bytes(claim_size(path.read_bytes(), 20000, 20000))
    with pytest.raises(ValueError, match='cannot open as an image') as error:
        EarthSynth180K(root)[0]
    assert str(path) in str(error.value)
    assert 'train.jsonl line 1' in str(error.value)
    dataset = EarthSynth180K(root, strict=False)
    assert dataset[0]['source'] == 'LoveDA'  # the next readable sample
    assert dataset.skipped == {'unreadable samples': 1}


def test_decompression_bomb_mask_for_category_samples(root: Path) -> None:
    path = root / 'val' / 'masks' / 'SIOR_07349_0.png'
    path.write_bytes(claim_size(path.read_bytes(), 20000, 20000))
    with pytest.raises(ValueError, match=r'SIOR_07349_0\.png: cannot decode the mask PNG'):
        EarthSynth180K(root, split='val', mode='category')
    dataset = EarthSynth180K(root, split='val', mode='category', strict=False)
    assert dataset.skipped == {'unreadable samples': 1}


# ---------------------------------------------------------------------- 2. lossless masks


def test_jpeg_mask_named_png_is_refused(root: Path) -> None:
    path = root / 'train' / 'masks' / 'LD_300_0.png'
    mask = np.asarray(Image.open(path))
    path.write_bytes(encode(mask, 'JPEG'))
    with pytest.raises(ValueError, match='the mask is a JPEG file; expected a lossless PNG') as e:
        EarthSynth180K(root)[1]
    assert str(path) in str(e.value)
    assert 'train.jsonl line' in str(e.value)
    dataset = EarthSynth180K(root, strict=False)
    assert [dataset[i]['source'] for i in range(4)] == [
        'DeepGlobe',
        'OpenEarthMap',
        'OpenEarthMap',
        'FAIR1M',
    ]


def test_jpeg_image_is_read_and_named_as_jpeg(root: Path) -> None:
    path = root / 'train' / 'images' / 'LD_300_0.png'
    image = np.asarray(Image.open(path).convert('RGB'))
    jpeg = encode(image, 'JPEG')
    path.write_bytes(jpeg)
    sample = EarthSynth180K(root)[1]
    assert sample['image'].shape == (3, 32, 32)
    assert torch.equal(
        sample['image'], torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1).float()
    )
    path.write_bytes(jpeg[: len(jpeg) // 2])
    with pytest.raises(
        ValueError, match=r'cannot (open as an image|decode the JPEG file)'
    ) as error:
        EarthSynth180K(root)[1]
    assert 'PNG' not in str(error.value).replace(str(path), '')


# ---------------------------------------------------------------------- 3. symlinks


def test_symlink_outside_root_is_refused(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / 'outside.png'
    image = root / 'train' / 'images' / 'DG_629683_0.png'
    shutil.copy(image, outside)
    image.unlink()
    image.symlink_to(outside)
    with pytest.raises(ValueError, match=r'line 1: field "file_name" .* resolves to .*outside.png'):
        EarthSynth180K(root)
    dataset = EarthSynth180K(root, strict=False)
    assert dataset.skipped == {'paths outside the dataset root': 1}
    assert len(dataset) == 3
    # a symlink that stays inside the root is fine
    image.unlink()
    inside = root / 'copy.png'
    shutil.copy(outside, inside)
    image.symlink_to(inside)
    assert len(EarthSynth180K(root)) == 4


def test_symlinked_folder_outside_root_is_refused(root: Path, tmp_path: Path) -> None:
    masks = root / 'val' / 'masks'
    shutil.move(masks, tmp_path / 'elsewhere')
    masks.symlink_to(tmp_path / 'elsewhere')
    with pytest.raises(ValueError, match=r'resolves to .*elsewhere.*outside the dataset root'):
        EarthSynth180K(root, split='val')
    with pytest.raises(ValueError, match=r'every one of its records was skipped \(2 '):
        EarthSynth180K(root, split='val', strict=False)


# ---------------------------------------------------------------------- 4. duplicates


def test_duplicated_record(root: Path) -> None:
    jsonl = root / 'train' / 'train.jsonl'
    lines = jsonl.read_text().splitlines()
    jsonl.write_text('\n'.join([*lines, lines[0]]) + '\n')
    duplicate = len(lines) + 1
    with pytest.raises(ValueError, match=f'line {duplicate}: repeats the sample of line 1'):
        EarthSynth180K(root)
    dataset = EarthSynth180K(root, strict=False)
    assert dataset.skipped == {'duplicate records': 1}
    assert len(dataset) == 4


# ---------------------------------------------------------------------- 5. smaller ones


def test_jsonl_with_byte_order_mark(root: Path) -> None:
    jsonl = root / 'train' / 'train.jsonl'
    jsonl.write_bytes(b'\xef\xbb\xbf' + jsonl.read_bytes())
    dataset = EarthSynth180K(root, mode='both')
    assert [r.origin.rsplit(' ', 1)[-1] for r in dataset.records][:2] == ['1', '2']
    assert len(dataset) == 4 + 13


def test_grey_alpha_mask(root: Path) -> None:
    path = root / 'train' / 'masks' / 'LD_300_0.png'
    grey = np.asarray(Image.open(path))
    alpha = np.full_like(grey, 255)
    path.write_bytes(encode(np.stack([grey, alpha], axis=-1)))
    assert torch.equal(EarthSynth180K(root)[1]['mask'], torch.from_numpy(grey).long())
    alpha[0, 0] = 0
    path.write_bytes(encode(np.stack([grey, alpha], axis=-1)))
    with pytest.raises(ValueError, match=r'LD_300_0.png.*transparent pixels'):
        EarthSynth180K(root)[1]


def test_jsonl_that_is_a_directory(root: Path) -> None:
    jsonl = root / 'train' / 'train.jsonl'
    jsonl.unlink()
    jsonl.mkdir()
    with pytest.raises(ValueError, match=r'train\.jsonl is a directory; expected a JSONL file'):
        EarthSynth180K(root)


def test_empty_jsonl(root: Path) -> None:
    (root / 'train' / 'train.jsonl').write_text('\n')
    with pytest.raises(ValueError, match=r'train\.jsonl is empty') as error:
        EarthSynth180K(root)
    assert not isinstance(error.value, DatasetNotFoundError)
    assert 'download=True' not in str(error.value)


# ---------------------------------------------------------------------- metadata


def test_metadata_from_source(root: Path) -> None:
    dataset = EarthSynth180K(root)
    gsd = {}
    for i in range(len(dataset)):
        metadata = dataset[i]['metadata']
        assert metadata.dtype == torch.float32
        assert metadata.shape == (len(METADATA_FIELDS),)
        others = torch.cat([metadata[:GSD], metadata[GSD + 1 :]])
        assert torch.isnan(others).all()
        gsd[dataset[i]['source']] = float(metadata[GSD])
    assert gsd['DeepGlobe'] == 0.5
    assert gsd['LoveDA'] == pytest.approx(0.3)
    assert math.isnan(gsd['OpenEarthMap'])  # 0.25-0.5 m: no single value
    assert math.isnan(gsd['FAIR1M'])
    # no JSONL, category samples made on the fly: still by source
    val = EarthSynth180K(root, split='val', mode='both')
    for i in range(len(val)):
        assert torch.isnan(val[i]['metadata']).all()  # DIOR and DOTA: ranges


def test_metadata_from_record(root: Path) -> None:
    jsonl = root / 'train' / 'train.jsonl'
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    records[0]['metadata'] = {'lon': 2.35, 'lat': 48.85, 'gsd': 0.4, 'year': 2021, 'month': None}
    jsonl.write_text(''.join(json.dumps(r) + '\n' for r in records))
    dataset = EarthSynth180K(root)
    expected = torch.tensor([2.35, 48.85, 0.4, math.nan, 2021, math.nan, math.nan])
    assert torch.allclose(dataset[0]['metadata'], expected, equal_nan=True)
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch['metadata'].shape == (4, len(METADATA_FIELDS))
    assert batch['metadata'][1, GSD] == pytest.approx(0.3)

    records[0]['metadata'] = {'height': 3}
    jsonl.write_text(''.join(json.dumps(r) + '\n' for r in records))
    with pytest.raises(
        ValueError, match='line 1: field "metadata": unknown metadata field \'height\''
    ):
        EarthSynth180K(root)
    skipping = EarthSynth180K(root, strict=False)
    assert skipping.skipped == {'records with bad metadata': 1}
    assert len(skipping) == 3


# ---------------------------------------------------------------------- 9. modes


def test_extracted_split_follows_the_umask(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w') as zf:  # images/ and masks/ at the archive's root
        for folder in ('images', 'masks'):
            data = (FAKE / 'train' / folder / 'LD_300_0.png').read_bytes()
            zf.writestr(f'{folder}/LD_300_0.png', data)
    (tmp_path / 'archives').mkdir()
    (tmp_path / 'archives' / 'train.zip').write_bytes(buffer.getvalue())
    old = os.umask(0o022)
    try:
        dataset = EarthSynth180K(tmp_path)
    finally:
        os.umask(old)
    assert len(dataset) == 1
    assert stat.S_IMODE((tmp_path / 'train').stat().st_mode) == 0o755
