# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Tests for the EarthSynth180K dataset: layout, modes, download, bad input, plots."""

import io
import json
import logging
import shutil
import zipfile
from pathlib import Path
from typing import Any

import huggingface_hub
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch.utils.data import DataLoader

from torchgeo_earthsynth.compat import DatasetNotFoundError
from torchgeo_earthsynth.datasets import EarthSynth180K, layout
from torchgeo_earthsynth.vocabulary import NUM_CLASSES, VOCABULARY, ids_from_prompt

FAKE = Path(__file__).parent / 'data' / 'earthsynth180k'
TRAIN_STEMS = ['DG_629683_0', 'LD_300_0', 'OEMxBD_coxsbazar_56_2', 'FAST_train_5093_0001_0']
TRAIN_CATEGORY_RECORDS = 3 + 2 + 4 + 4  # foreground classes of the four train scenes


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A writable copy of the fake extracted corpus (train with JSONL, val without)."""
    for split in ('train', 'val'):
        shutil.copytree(FAKE / split, tmp_path / 'data' / split)
    return tmp_path / 'data'


class FakeHub:
    """Stands in for ``huggingface_hub.snapshot_download``: copies the fake repo."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, repo_id: str, **kwargs: Any) -> str:
        self.calls.append({'repo_id': repo_id, **kwargs})
        local_dir = Path(kwargs['local_dir'])
        shutil.copytree(FAKE / 'hub', local_dir, dirs_exist_ok=True)
        return str(local_dir)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    fake = FakeHub()
    monkeypatch.setattr(huggingface_hub, 'snapshot_download', fake)
    return fake


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format='PNG')
    return buffer.getvalue()


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image)


def append_lines(jsonl: Path, *lines: str) -> int:
    """Append lines to a JSONL file; returns the line number of the first one."""
    first = len(jsonl.read_text().splitlines()) + 1
    with jsonl.open('a') as f:
        f.writelines(line + '\n' for line in lines)
    return first


# ---------------------------------------------------------------------- reading


def test_full_mode_from_jsonl(root: Path) -> None:
    dataset = EarthSynth180K(root, split='train')
    assert len(dataset) == 4
    records = [json.loads(line) for line in (root / 'train' / 'train.jsonl').open()]
    full = [r for r in records if 'category_masks' in r]
    for index, (stem, record) in enumerate(zip(TRAIN_STEMS, full)):
        sample = dataset[index]
        assert set(sample) == {'image', 'mask', 'prompt', 'categories', 'source', 'metadata'}
        assert sample['image'].dtype == torch.float32
        assert sample['image'].shape == (3, 32, 32)
        assert sample['image'].is_contiguous()
        assert sample['mask'].dtype == torch.int64
        assert sample['mask'].shape == (32, 32)
        expected_image = read_png(root / 'train' / 'images' / f'{stem}.png')
        assert torch.equal(
            sample['image'], torch.from_numpy(expected_image).permute(2, 0, 1).float()
        )
        expected_mask = read_png(root / 'train' / 'masks' / f'{stem}.png')
        assert torch.equal(sample['mask'], torch.from_numpy(expected_mask).long())
        assert sample['prompt'] == record['text']
        assert sample['categories'].shape == (NUM_CLASSES,)
        assert sample['categories'].dtype == torch.float32
        present = torch.nonzero(sample['categories']).view(-1).tolist()
        assert present == np.unique(expected_mask).tolist()
    sources = [dataset[i]['source'] for i in range(4)]
    assert sources == ['DeepGlobe', 'LoveDA', 'OpenEarthMap', 'FAIR1M']


def test_released_path_form(root: Path) -> None:
    # the LD_ record holds the authors' path ./data/EarthSynth-180K/train/images/LD_300_0.png
    text = (root / 'train' / 'train.jsonl').read_text()
    assert './data/EarthSynth-180K/train/images/LD_300_0.png' in text
    record = EarthSynth180K(root).records[1]
    assert record.image == root / 'train' / 'images' / 'LD_300_0.png'
    assert record.mask == root / 'train' / 'masks' / 'LD_300_0.png'
    assert record.prompt == 'A satellite image of road, building'
    assert record.origin == f'{root / "train" / "train.jsonl"} line 5'


def test_category_mode_from_jsonl(root: Path) -> None:
    dataset = EarthSynth180K(root, split='train', mode='category')
    assert len(dataset) == TRAIN_CATEGORY_RECORDS
    for index in range(len(dataset)):
        sample = dataset[index]
        (class_id,) = ids_from_prompt(sample['prompt'])
        assert set(sample['mask'].unique().tolist()) <= {0, class_id}
        assert (sample['mask'] == class_id).any()
        assert sample['prompt'] == f'A satellite image of {VOCABULARY[class_id]}'
        # as released, a category image is a copy of the full image
        stem = dataset.records[index].image.stem
        full = next(s for s in TRAIN_STEMS if stem.startswith(s))
        expected = read_png(root / 'train' / 'images' / f'{full}.png')
        assert torch.equal(sample['image'], torch.from_numpy(expected).permute(2, 0, 1).float())
    both = EarthSynth180K(root, split='train', mode='both')
    assert len(both) == 4 + TRAIN_CATEGORY_RECORDS
    assert both[0]['prompt'] == EarthSynth180K(root)[0]['prompt']


def test_folders_only(root: Path) -> None:
    # val/ has images/ and masks/ only: prompts come from the masks
    dataset = EarthSynth180K(root, split='val')
    assert len(dataset) == 2
    first, second = dataset[0], dataset[1]
    assert first['prompt'] == 'A satellite image of pavement, baseball diamond, vehicle'
    assert first['source'] == 'DIOR'
    # the SOTA_ mask is an RGB PNG with equal channels
    assert read_png(root / 'val' / 'masks' / 'SOTA_0001_0.png').ndim == 3
    assert second['mask'].unique().tolist() == [6, 17, 39, 66]
    assert second['prompt'] == 'A satellite image of water, ship, windmill, warship'
    assert second['source'] == 'DOTA'
    assert dataset.records[0].prompt is None


def test_category_mode_on_the_fly(root: Path) -> None:
    dataset = EarthSynth180K(root, split='val', mode='category')
    full = EarthSynth180K(root, split='val')
    assert len(dataset) == 3 + 4
    assert [r.category for r in dataset.records] == [3, 22, 38, 6, 17, 39, 66]
    for index, record in enumerate(dataset.records):
        sample = dataset[index]
        parent = full[0] if index < 3 else full[1]
        assert record.category is not None
        keep = parent['mask'] == record.category
        assert torch.equal(sample['mask'], torch.where(keep, parent['mask'], 0))
        assert torch.equal(sample['image'], parent['image'])
        assert sample['prompt'] == f'A satellite image of {VOCABULARY[record.category]}'
        assert torch.nonzero(sample['categories']).view(-1).tolist() == [0, record.category]
    both = EarthSynth180K(root, split='val', mode='both')
    assert [r.category for r in both.records] == [None, 3, 22, 38, None, 6, 17, 39, 66]


def test_category_on_the_fly_when_jsonl_has_none(root: Path) -> None:
    jsonl = root / 'train' / 'train.jsonl'
    lines = jsonl.read_text().splitlines()
    full = [line for line in lines if 'category_masks' in json.loads(line)]
    assert len(full) == 4
    jsonl.write_text('\n'.join(full) + '\n')
    dataset = EarthSynth180K(root, split='train', mode='category')
    assert len(dataset) == TRAIN_CATEGORY_RECORDS
    assert all(r.category is not None for r in dataset.records)
    assert all(r.mask.parent.name == 'masks' for r in dataset.records)


def test_transforms(root: Path) -> None:
    def transform(sample: dict[str, Any]) -> dict[str, Any]:
        sample['image'] = sample['image'] / 255
        sample['prompt'] = sample['prompt'].upper()
        return sample

    plain = EarthSynth180K(root)[0]
    sample = EarthSynth180K(root, transforms=transform)[0]
    assert torch.allclose(sample['image'], plain['image'] / 255)
    assert sample['prompt'] == plain['prompt'].upper()


def test_dataloader_batches(root: Path) -> None:
    batch = next(iter(DataLoader(EarthSynth180K(root), batch_size=3)))
    assert batch['image'].shape == (3, 3, 32, 32)
    assert batch['mask'].shape == (3, 32, 32)
    assert batch['categories'].shape == (3, NUM_CLASSES)
    assert isinstance(batch['prompt'], list)
    assert batch['source'] == ['DeepGlobe', 'LoveDA', 'OpenEarthMap']


def test_indexing(root: Path) -> None:
    dataset = EarthSynth180K(root)
    assert dataset[-1]['source'] == dataset[3]['source'] == 'FAIR1M'
    with pytest.raises(IndexError, match='index 4 is out of range for 4 samples'):
        dataset[4]
    assert len(list(dataset)) == 4  # iteration stops
    assert len(dataset.records[1:3]) == 2


def test_invalid_options(root: Path) -> None:
    with pytest.raises(AssertionError, match='split must be one of'):
        EarthSynth180K(root, split='test')  # type: ignore[arg-type]
    with pytest.raises(AssertionError, match='mode must be one of'):
        EarthSynth180K(root, mode='pixels')  # type: ignore[arg-type]


def test_plot(root: Path) -> None:
    dataset = EarthSynth180K(root)
    sample = dataset[0]
    figure = dataset.plot(sample, suptitle='fake')
    assert isinstance(figure, Figure)
    assert len(figure.axes) == 2
    legend = figure.axes[-1].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [
        'water',
        'agriculture land',
        'forest land',
    ]
    assert sample['prompt'] in [t.get_text() for t in figure.texts]
    plt.close(figure)

    sample['prediction'] = torch.full_like(sample['mask'], 66)
    figure = dataset.plot(sample, show_titles=False)
    assert len(figure.axes) == 3
    legend_texts = [t.get_text() for t in figure.axes[-1].get_legend().get_texts()]
    assert legend_texts[-1] == 'warship'
    assert all(ax.get_title() == '' for ax in figure.axes)
    plt.close(figure)


# ---------------------------------------------------------------------- finding and download


def test_not_found(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match='Dataset not found') as error:
        EarthSynth180K(tmp_path / 'missing')
    message = str(error.value)
    assert str(tmp_path / 'missing' / 'train' / 'images') in message
    assert str(tmp_path / 'missing' / 'archives') in message
    assert 'download=True' in message
    assert 'jaychempan/EarthSynth-180K' in message
    assert 'earthsynth build-corpus' in message
    assert 'EarthSynthMini' in message


def test_empty_split(tmp_path: Path) -> None:
    (tmp_path / 'train' / 'images').mkdir(parents=True)
    (tmp_path / 'train' / 'masks').mkdir()
    with pytest.raises(DatasetNotFoundError, match='holds no full samples'):
        EarthSynth180K(tmp_path)


def test_every_record_bad_names_the_jsonl_not_a_download(root: Path) -> None:
    # found by benchmarks/fault_fuzz.py: lenient reading of a JSONL of binary garbage said
    # "dataset not found ... download=True" without naming the file
    jsonl = layout.jsonl_path(root / 'train')
    jsonl.write_bytes(b'\xff\xfe' + bytes(range(256)) * 2)
    with pytest.raises(ValueError, match=rf'{jsonl.name}.*every one of its records was skipped'):
        EarthSynth180K(root, strict=False)


def test_download(tmp_path: Path, hub: FakeHub) -> None:
    root = tmp_path / 'downloaded'
    dataset = EarthSynth180K(root, download=True)
    assert len(hub.calls) == 1
    assert hub.calls[0]['repo_id'] == 'jaychempan/EarthSynth-180K'
    assert hub.calls[0]['repo_type'] == 'dataset'
    assert Path(hub.calls[0]['local_dir']) == root / 'archives'
    # train.zip.part00..02 joined and extracted; the JSONL written by category augmentation
    assert len(dataset) == 4
    for stem in TRAIN_STEMS:
        for folder in ('images', 'masks'):
            got = (root / 'train' / folder / f'{stem}.png').read_bytes()
            assert got == (FAKE / 'train' / folder / f'{stem}.png').read_bytes()
    assert layout.jsonl_path(root / 'train').exists()
    category = EarthSynth180K(root, mode='category')
    assert len(category) == TRAIN_CATEGORY_RECORDS
    assert sorted(p.name for p in (root / 'train' / 'category_masks').iterdir()) == sorted(
        p.name for p in (FAKE / 'train' / 'category_masks').iterdir()
    )
    # val.zip_part_aa/ab hold images/ and masks/ at the top: placed as val/
    val = EarthSynth180K(root, split='val', download=True)
    assert len(val) == 2
    assert val[1]['mask'].unique().tolist() == [6, 17, 39, 66]
    assert len(hub.calls) == 1  # found on disk: not downloaded again
    assert not list(root.glob('.extract-*')) and not list(root.glob('*.joined'))


def test_archives_without_download(tmp_path: Path) -> None:
    # archives put in root/archives by hand are extracted without download=True
    root = tmp_path / 'manual'
    shutil.copytree(FAKE / 'hub', root / 'archives')
    assert len(EarthSynth180K(root, split='val')) == 2


def test_download_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(repo_id: str, **kwargs: Any) -> str:
        raise OSError('network is unreachable')

    monkeypatch.setattr(huggingface_hub, 'snapshot_download', offline)
    with pytest.raises(DatasetNotFoundError, match='Dataset not found') as error:
        EarthSynth180K(tmp_path / 'offline', download=True)
    assert 'download failed: network is unreachable' in str(error.value)
    assert str(tmp_path / 'offline' / 'train' / 'images') in str(error.value)


def test_download_without_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def train_only(repo_id: str, **kwargs: Any) -> str:
        local_dir = Path(kwargs['local_dir'])
        local_dir.mkdir(parents=True)
        for part in sorted((FAKE / 'hub').glob('train.zip.part*')):
            shutil.copy(part, local_dir)
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub, 'snapshot_download', train_only)
    with pytest.raises(DatasetNotFoundError, match="hold no 'val' split"):
        EarthSynth180K(tmp_path / 'partial', split='val', download=True)


def zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w') as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def test_parts_joined_in_natural_order(tmp_path: Path) -> None:
    image = np.full((8, 8, 3), 90, dtype=np.uint8)
    mask = np.full((8, 8), 6, dtype=np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = zip_of(
        {
            'train/images/a.png': png_bytes(image),
            'train/masks/a.png': png_bytes(mask),
            'train/noise.png': png_bytes(noise),  # makes the archive long enough for 11 parts
        }
    )
    archives = tmp_path / 'root' / 'archives'
    archives.mkdir(parents=True)
    step = -(-len(data) // 11)
    for i in range(11):  # part1 .. part11: part10 sorts before part2 as text
        (archives / f'train.zip.part{i + 1}').write_bytes(data[i * step : (i + 1) * step])
    dataset = EarthSynth180K(tmp_path / 'root')
    assert dataset[0]['prompt'] == 'A satellite image of water'


def test_zip_slip_rejected(tmp_path: Path) -> None:
    archives = tmp_path / 'root' / 'archives'
    archives.mkdir(parents=True)
    (archives / 'train.zip').write_bytes(zip_of({'../../evil.png': b'x'}))
    with pytest.raises(ValueError, match=r"member '../../evil.png' would extract outside"):
        EarthSynth180K(tmp_path / 'root')
    assert not (tmp_path / 'evil.png').exists()


def test_bad_archive(tmp_path: Path) -> None:
    archives = tmp_path / 'root' / 'archives'
    archives.mkdir(parents=True)
    (archives / 'train.zip.part00').write_bytes(b'not a zip')
    (archives / 'train.zip.part01').write_bytes(b'at all')
    with pytest.raises(ValueError, match=r'not a zip archive .*train.zip.part00, train.zip.part01'):
        EarthSynth180K(tmp_path / 'root')


# ---------------------------------------------------------------------- bad input


def test_corrupt_png(root: Path) -> None:
    path = root / 'train' / 'images' / 'DG_629683_0.png'
    path.write_bytes(b'this is not a PNG')
    dataset = EarthSynth180K(root)
    with pytest.raises(ValueError, match='cannot open as an image') as error:
        dataset[0]
    assert 'PNG' not in str(error.value).replace(str(path), '')  # images need not be PNGs
    assert str(path) in str(error.value)
    assert 'train.jsonl line 1' in str(error.value)


def test_truncated_png(root: Path) -> None:
    path = root / 'train' / 'masks' / 'OEMxBD_coxsbazar_56_2.png'
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match='damaged or truncated') as error:
        EarthSynth180K(root)[2]
    assert str(path) in str(error.value)
    assert 'train.jsonl line 8' in str(error.value)


def test_size_mismatch(root: Path) -> None:
    path = root / 'train' / 'masks' / 'LD_300_0.png'
    path.write_bytes(png_bytes(np.zeros((16, 16), dtype=np.uint8)))
    with pytest.raises(ValueError, match=r'is 32x32 but its mask .* is 16x16; expected equal'):
        EarthSynth180K(root)[1]


def test_mask_id_out_of_vocabulary(root: Path) -> None:
    path = root / 'train' / 'masks' / 'DG_629683_0.png'
    mask = read_png(path)
    mask[0, 0] = 67
    path.write_bytes(png_bytes(mask))
    with pytest.raises(ValueError, match=r'mask ids span \[0, 67\]; expected vocabulary ids in'):
        EarthSynth180K(root)[0]


def test_unequal_mask_channels(root: Path) -> None:
    path = root / 'val' / 'masks' / 'SOTA_0001_0.png'
    mask = read_png(path)
    mask[0, 0, 1] = 5
    path.write_bytes(png_bytes(mask))
    with pytest.raises(ValueError, match='3-channel mask must have equal colour channels'):
        EarthSynth180K(root, split='val')[1]


def test_line_not_json(root: Path) -> None:
    jsonl = root / 'train' / 'train.jsonl'
    number = append_lines(jsonl, '{"file_name": "images/DG_629683_0.png",')
    with pytest.raises(ValueError, match=f'train.jsonl line {number}: not valid JSON'):
        EarthSynth180K(root)


def test_record_missing_field(root: Path) -> None:
    jsonl = root / 'train' / 'train.jsonl'
    record = {'file_name': 'images/DG_629683_0.png', 'text': 'A satellite image of water'}
    number = append_lines(jsonl, json.dumps(record), '["a list"]')
    with pytest.raises(ValueError, match=f'line {number}: missing .* field.*mask_name; expected'):
        EarthSynth180K(root)
    jsonl.write_text(jsonl.read_text().replace(json.dumps(record) + '\n', ''))
    with pytest.raises(ValueError, match=f'line {number}: .*file_name, mask_name, text'):
        EarthSynth180K(root)


@pytest.mark.parametrize('bad', ['../x.png', '/etc/x.png', 'images/../../x.png'])
def test_path_outside_split(root: Path, bad: str) -> None:
    (root / 'x.png').write_bytes((root / 'train' / 'images' / 'LD_300_0.png').read_bytes())
    record = {'file_name': bad, 'mask_name': 'masks/LD_300_0.png', 'text': 'x'}
    number = append_lines(root / 'train' / 'train.jsonl', json.dumps(record))
    with pytest.raises(ValueError, match=f'line {number}: field "file_name" = .* points outside'):
        EarthSynth180K(root)


def test_missing_file(root: Path) -> None:
    record = {'file_name': 'images/gone.png', 'mask_name': 'masks/LD_300_0.png', 'text': 'x'}
    number = append_lines(root / 'train' / 'train.jsonl', json.dumps(record))
    with pytest.raises(ValueError, match=f"line {number}: .*'images/gone.png': no such file"):
        EarthSynth180K(root)


def test_image_without_mask_partner(root: Path) -> None:
    (root / 'val' / 'images' / 'SIOR_07349_0.png').unlink()
    with pytest.raises(ValueError, match=r'SIOR_07349_0\.png: no image of the same name'):
        EarthSynth180K(root, split='val')


def scene_split(split_dir: Path, count: int) -> list[dict[str, str]]:
    """Scenes of one flat colour each (tells samples apart); returns their JSONL records."""
    records = []
    for i in range(count):
        stem = f'DG_{i}'
        (split_dir / 'images').mkdir(parents=True, exist_ok=True)
        (split_dir / 'masks').mkdir(parents=True, exist_ok=True)
        image = np.full((8, 8, 3), 10 * i, dtype=np.uint8)
        (split_dir / 'images' / f'{stem}.png').write_bytes(png_bytes(image))
        mask = np.full((8, 8), 6, dtype=np.uint8)
        (split_dir / 'masks' / f'{stem}.png').write_bytes(png_bytes(mask))
        records.append(
            {
                'file_name': f'images/{stem}.png',
                'mask_name': f'masks/{stem}.png',
                'text': 'A satellite image of water',
            }
        )
    return records


def test_not_strict_skips_counts_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    split_dir = tmp_path / 'train'
    records = scene_split(split_dir, 8)
    lines = [json.dumps(r) for r in records]
    lines += [
        'not json',
        json.dumps({'file_name': 'images/DG_0.png', 'text': 'x'}),
        json.dumps({'file_name': '../x.png', 'mask_name': 'masks/DG_0.png', 'text': 'x'}),
        json.dumps({'file_name': 'images/gone.png', 'mask_name': 'masks/DG_0.png', 'text': 'x'}),
    ]
    (split_dir / 'train.jsonl').write_text('\n'.join(lines) + '\n')
    # damage four of the eight scenes, one way each
    (split_dir / 'images' / 'DG_1.png').write_bytes(b'garbage')
    truncated = (split_dir / 'masks' / 'DG_3.png').read_bytes()[:40]
    (split_dir / 'masks' / 'DG_3.png').write_bytes(truncated)
    (split_dir / 'masks' / 'DG_4.png').write_bytes(png_bytes(np.zeros((4, 4), np.uint8)))
    (split_dir / 'masks' / 'DG_6.png').write_bytes(png_bytes(np.full((8, 8), 99, np.uint8)))

    with pytest.raises(ValueError, match='line 9: not valid JSON'):
        EarthSynth180K(tmp_path)
    with caplog.at_level(logging.WARNING):
        dataset = EarthSynth180K(tmp_path, strict=False)
    summary = [r.getMessage() for r in caplog.records]
    assert len(summary) == 1
    assert 'skipped 4 bad record(s) and kept 8 sample(s)' in summary[0]
    assert '1 lines that are not JSON' in summary[0]
    assert '1 records missing fields' in summary[0]
    assert '1 paths outside the split folder' in summary[0]
    assert '1 missing files' in summary[0]
    assert sum(dataset.skipped.values()) == 4
    assert len(dataset) == 8

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        for _ in range(2):  # each unreadable sample is counted and logged once
            seen = [int(dataset[i]['image'][0, 0, 0]) // 10 for i in range(len(dataset))]
    assert dataset.skipped['unreadable samples'] == 4
    assert len(caplog.records) == 4
    assert {0, 2, 5, 7} == set(seen)  # every good sample is still there
    assert seen == [0, 2, 2, 5, 5, 5, 7, 7]  # a bad one is replaced by the next good one
    messages = '\n'.join(r.getMessage() for r in caplog.records)
    for name in ('DG_1.png', 'DG_3.png', 'DG_4.png', 'DG_6.png'):
        assert name in messages


def test_not_strict_category_on_the_fly(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    (root / 'val' / 'masks' / 'SIOR_07349_0.png').write_bytes(b'broken')
    with pytest.raises(ValueError, match=r'SIOR_07349_0\.png: cannot decode the mask PNG'):
        EarthSynth180K(root, split='val', mode='category')
    with caplog.at_level(logging.WARNING):
        dataset = EarthSynth180K(root, split='val', mode='both', strict=False)
    assert dataset.skipped == {'unreadable samples': 1}
    assert [r.category for r in dataset.records] == [None, 6, 17, 39, 66]
    assert 'skipped 1 bad record(s) and kept 5 sample(s)' in caplog.text


def test_all_unreadable(tmp_path: Path) -> None:
    scene_split(tmp_path / 'train', 2)
    for path in (tmp_path / 'train' / 'images').iterdir():
        path.write_bytes(b'x')
    dataset = EarthSynth180K(tmp_path, strict=False)
    with pytest.raises(ValueError, match='none of the 2 samples can be read'):
        dataset[0]
