# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Tests for the procedural mini corpus (make_mini_corpus, EarthSynthMini)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from torchgeo_earthsynth.conditions import METADATA_FIELDS
from torchgeo_earthsynth.datasets import EarthSynth180K, EarthSynthMini, layout, make_mini_corpus
from torchgeo_earthsynth.vocabulary import (
    NUM_CLASSES,
    ids_from_prompt,
    prompt_from_mask,
    source_from_stem,
)

SMALL = {'size': 32, 'num_train': 6, 'num_val': 2}


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*.*'))}


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image)


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    first = tree_bytes(make_mini_corpus(tmp_path / 'a', seed=1, **SMALL))
    again = tree_bytes(make_mini_corpus(tmp_path / 'b', seed=1, **SMALL))
    other = tree_bytes(make_mini_corpus(tmp_path / 'c', seed=2, **SMALL))
    assert first == again
    images = [name for name in first if name.startswith('train/images/')]
    assert len(images) == 6
    assert all(first[name] != other[name] for name in images)


def test_exact_layout(mini_root: Path) -> None:
    for split, count in (('train', 24), ('val', 8)):
        split_dir = mini_root / split
        assert sorted(p.name for p in split_dir.iterdir()) == sorted(
            [*layout.FOLDERS, f'{split}.jsonl']
        )
        assert len(list((split_dir / 'images').glob('*.png'))) == count
        lines = layout.jsonl_path(split_dir).read_text().splitlines()
        records = [json.loads(line) for line in lines]
        full = [r for r in records if r['file_name'].startswith('images/')]
        category = [r for r in records if r['file_name'].startswith('category_images/')]
        assert len(full) == count
        assert len(full) + len(category) == len(records)
        for record in full:
            assert set(record) == {'file_name', 'mask_name', 'text', 'category_masks', 'metadata'}
            assert tuple(record['metadata']) == METADATA_FIELDS
            image = read_png(split_dir / record['file_name'])
            mask = read_png(split_dir / record['mask_name'])
            assert image.shape == (32, 32, 3) and image.dtype == np.uint8
            assert mask.shape == (32, 32) and mask.dtype == np.uint8
            assert record['text'] == prompt_from_mask(mask)
            assert len(record['category_masks']) == len(ids_from_prompt(record['text']))
        owner = {m: Path(r['file_name']).stem for r in full for m in r['category_masks']}
        assert set(owner) == {r['mask_name'] for r in category}
        for record in category:
            (class_id,) = ids_from_prompt(record['text'])
            mask = read_png(split_dir / record['mask_name'])
            # a category mask keeps the class id (not 255) and zero elsewhere
            assert set(np.unique(mask).tolist()) <= {0, class_id}
            assert (mask == class_id).any()
            full_stem = owner[record['mask_name']]
            full_mask = read_png(split_dir / 'masks' / f'{full_stem}.png')
            assert np.array_equal(mask, np.where(full_mask == class_id, class_id, 0))
            category_image = (split_dir / record['file_name']).read_bytes()
            assert category_image == (split_dir / 'images' / f'{full_stem}.png').read_bytes()


def test_classes_and_sources(mini_root: Path) -> None:
    dataset = EarthSynth180K(mini_root, split='train')
    classes: set[int] = set()
    sources = set()
    for index in range(len(dataset)):
        sample = dataset[index]
        classes |= set(sample['mask'].unique().tolist())
        sources.add(sample['source'])
    assert len(classes) >= 8
    assert max(classes) > 11  # object classes, not only land cover
    assert sources == {'DeepGlobe', 'LoveDA', 'OpenEarthMap', 'DIOR'}
    stems = [p.stem for p in (mini_root / 'train' / 'images').iterdir()]
    assert {source_from_stem(stem) for stem in stems} == sources


def test_cached_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_mini_corpus(tmp_path, seed=3, **SMALL)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob('*.*')}

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError('the cached corpus was written again')

    monkeypatch.setattr(layout, 'write_sample', fail)
    assert make_mini_corpus(tmp_path, seed=3, **SMALL) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob('*.*')} == stamps
    assert json.loads((root / 'corpus.json').read_text())['seed'] == 3
    assert not list(tmp_path.glob('.mini-*'))  # no temporary folder left behind


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('EARTHSYNTH_CACHE', str(tmp_path / 'cache'))
    root = make_mini_corpus(seed=4, **SMALL)
    assert root.parent == tmp_path / 'cache'
    dataset = EarthSynthMini(split='val', seed=4, **SMALL)
    assert dataset.root == root
    assert len(dataset) == 2


def test_mini_dataset(mini_root: Path) -> None:
    parent = mini_root.parent
    kwargs = {'seed': 0, 'size': 32, 'num_train': 24, 'num_val': 8}
    train = EarthSynthMini(parent, **kwargs)  # the conftest corpus: found, not remade
    assert train.root == mini_root
    assert len(train) == 24
    sample = train[0]
    assert sample['image'].shape == (3, 32, 32)
    assert sample['image'].dtype == torch.float32
    assert 0 <= float(sample['image'].min()) and float(sample['image'].max()) <= 255
    assert sample['mask'].dtype == torch.int64
    assert sample['categories'].shape == (NUM_CLASSES,)
    assert sample['prompt'] == prompt_from_mask(sample['mask'])
    category = EarthSynthMini(parent, split='val', mode='category', **kwargs)
    assert len(category) > 8
    for index in range(len(category)):
        assert len(ids_from_prompt(category[index]['prompt'])) == 1


def test_image_is_a_function_of_the_layout(mini_root: Path) -> None:
    # fit a per-pixel nearest-class-mean colour classifier on train, predict val masks
    train = EarthSynth180K(mini_root, split='train')
    val = EarthSynth180K(mini_root, split='val')

    def pixels(dataset: EarthSynth180K) -> tuple[torch.Tensor, torch.Tensor]:
        samples = [dataset[i] for i in range(len(dataset))]
        colours = torch.cat([s['image'].reshape(3, -1).T for s in samples])
        labels = torch.cat([s['mask'].reshape(-1) for s in samples])
        return colours, labels

    colours, labels = pixels(train)
    classes = labels.unique()
    means = torch.stack([colours[labels == c].mean(0) for c in classes])
    val_colours, val_labels = pixels(val)
    predicted = classes[torch.cdist(val_colours, means).argmin(1)]
    accuracy = (predicted == val_labels).float().mean().item()
    majority = (val_labels == labels.mode().values).float().mean().item()
    assert accuracy > 0.7  # measured 0.82 at 32 px
    assert accuracy > 3 * majority


def test_latitudes_option(tmp_path: Path) -> None:
    default = make_mini_corpus(tmp_path, seed=5, **SMALL)
    assert make_mini_corpus(tmp_path, seed=5, latitudes=(-60, 60), **SMALL) == default
    north = make_mini_corpus(tmp_path, seed=5, latitudes=(0, 60), **SMALL)
    assert north != default and north.name.endswith('-lat0_60')
    assert json.loads((north / 'corpus.json').read_text())['latitudes'] == [0, 60]
    lat = METADATA_FIELDS.index('lat')
    everywhere = EarthSynthMini(tmp_path, seed=5, **SMALL)
    northern = EarthSynthMini(tmp_path, seed=5, latitudes=(0, 60), **SMALL)
    assert northern.root == north
    lats = [float(northern[i]['metadata'][lat]) for i in range(len(northern))]
    assert all(0 <= x <= 60 for x in lats)
    # the same uniform draws, rescaled: the default corpus keeps its latitudes
    for i, x in enumerate(lats):
        assert float(everywhere[i]['metadata'][lat]) == pytest.approx(2 * x - 60, abs=2e-4)
    with pytest.raises(ValueError, match=r'latitudes: expected \(south, north\)'):
        make_mini_corpus(tmp_path, latitudes=(30, -30), **SMALL)
