# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Tests for the EarthSynth-180K vocabulary, prompts, sources, palette and label maps."""

import numpy as np
import pytest
import torch
from torchgeo.datasets import DeepGlobeLandCover, LoveDA

from torchgeo_earthsynth.encodings import label_map
from torchgeo_earthsynth.vocabulary import (
    CLASS_IDS,
    NUM_CLASSES,
    PALETTE,
    SOURCES,
    VOCABULARY,
    class_histogram,
    class_names,
    colorize,
    ids_from_prompt,
    multi_hot,
    present_ids,
    prompt_from_ids,
    prompt_from_mask,
    source_from_stem,
)


@pytest.mark.parametrize(
    ('index', 'name'),
    [
        (0, 'background'),
        (1, 'bare land'),
        (11, 'urban land'),
        (12, 'large vehicle'),
        (39, 'windmill'),
        (40, 'A220'),
        (49, 'bus'),
        (66, 'warship'),
    ],
)
def test_names_at_key_indices(index: int, name: str) -> None:
    assert VOCABULARY[index] == name
    assert CLASS_IDS[name] == index


def test_vocabulary_size_and_uniqueness() -> None:
    assert NUM_CLASSES == len(VOCABULARY) == 67
    assert len(set(VOCABULARY)) == 67
    # ', ' separates names in prompts, so no name may contain it
    assert not any(', ' in name for name in VOCABULARY)


def test_prompt_template() -> None:
    assert prompt_from_ids([9, 0, 6, 6]) == 'A satellite image of water, forest land'
    assert prompt_from_ids([66, 12]) == 'A satellite image of large vehicle, warship'
    assert prompt_from_ids([0]) == 'A satellite image of '
    assert class_names([40, 0, 39]) == ['windmill', 'A220']


def test_prompt_from_mask_numpy_and_tensor() -> None:
    mask = np.array([[0, 8], [4, 8]], dtype=np.uint8)
    expected = 'A satellite image of road, building'
    assert prompt_from_mask(mask) == expected
    assert prompt_from_mask(torch.from_numpy(mask).long()) == expected
    assert present_ids(mask) == [0, 4, 8]


def test_ids_from_prompt_round_trip() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        ids = sorted(set(rng.integers(1, NUM_CLASSES, size=int(rng.integers(1, 8))).tolist()))
        assert ids_from_prompt(prompt_from_ids(ids)) == ids
    assert ids_from_prompt(prompt_from_ids(range(NUM_CLASSES))) == list(range(1, NUM_CLASSES))
    assert ids_from_prompt('A satellite image of ') == []


def test_ids_from_prompt_errors() -> None:
    with pytest.raises(ValueError, match="does not start with 'A satellite image of '"):
        ids_from_prompt('An aerial photo of road')
    with pytest.raises(ValueError, match="names 'spaceport', which is not in the vocabulary"):
        ids_from_prompt('A satellite image of road, spaceport')


def test_class_ids_out_of_range() -> None:
    with pytest.raises(ValueError, match=r'class ids \[67\] are outside the vocabulary'):
        prompt_from_ids([3, 67])


@pytest.mark.parametrize(
    ('stem', 'source'),
    [
        ('DG_629683_0', 'DeepGlobe'),
        ('LD_300_0', 'LoveDA'),
        ('OEMxBD_coxsbazar_56_2', 'OpenEarthMap'),
        ('OEM_tile', 'OpenEarthMap'),
        ('FAST_train_5093_0001_0', 'FAIR1M'),
        ('SIOR_07349_0', 'DIOR'),
        ('SOTA_P0001_0', 'DOTA'),
        ('DG_629683_0_forest_land', 'DeepGlobe'),
        ('dg_1', 'other'),
        ('xDG_1', 'other'),
        ('tile_0001', 'other'),
        ('', 'other'),
    ],
)
def test_source_from_stem(stem: str, source: str) -> None:
    assert source_from_stem(stem) == source
    assert source in SOURCES


def test_palette() -> None:
    assert PALETTE.shape == (NUM_CLASSES, 3)
    assert PALETTE.dtype == np.uint8
    assert len(np.unique(PALETTE, axis=0)) == NUM_CLASSES
    assert PALETTE[0].tolist() == [0, 0, 0]


def test_colorize() -> None:
    mask = torch.tensor([[0, 6], [66, 6]])
    rgb = colorize(mask)
    assert rgb.shape == (2, 2, 3)
    assert rgb.dtype == np.uint8
    assert rgb[0, 1].tolist() == PALETTE[6].tolist() == rgb[1, 1].tolist()
    assert rgb[1, 0].tolist() == PALETTE[66].tolist()


def test_multi_hot() -> None:
    vector = multi_hot(torch.tensor([[0, 5], [66, 5]]))
    assert vector.shape == (NUM_CLASSES,)
    assert vector.dtype == torch.float32
    assert torch.nonzero(vector).view(-1).tolist() == [0, 5, 66]
    with pytest.raises(ValueError, match=r'mask ids span \[0, 70\]; expected vocabulary ids'):
        multi_hot(torch.tensor([0, 70]))


def test_class_histogram() -> None:
    masks = torch.tensor([[[0, 5], [66, 5]], [[1, 1], [1, 1]]])
    counts = class_histogram(masks)
    assert counts.shape == (2, NUM_CLASSES) and counts.dtype == torch.long
    assert counts[0].nonzero().flatten().tolist() == [0, 5, 66]
    assert counts[0, 5] == 2 and counts[1, 1] == 4 and counts.sum() == 8
    assert class_histogram(masks, num_classes=67).equal(counts)
    assert class_histogram(torch.zeros(0, 4, 4, dtype=torch.long)).shape == (0, NUM_CLASSES)
    with pytest.raises(ValueError, match=r'mask ids span \[0, 7\]; expected class ids in \[0, 4\]'):
        class_histogram(torch.tensor([[0, 7]]), num_classes=5)


def test_label_map_loveda() -> None:
    lut = label_map(LoveDA.classes, 'LoveDA')
    assert lut.dtype == torch.long
    assert len(lut) == len(LoveDA.classes)
    expected = {
        'background': 'background',
        'building': 'building',
        'road': 'road',
        'water': 'water',
        'barren': 'barren land',
        'forest': 'forest land',
        'agriculture': 'agriculture land',
        'no-data': 'background',
    }
    for index, name in enumerate(LoveDA.classes):
        assert VOCABULARY[int(lut[index])] == expected[name]


def test_label_map_deepglobe() -> None:
    lut = label_map(DeepGlobeLandCover.classes, 'DeepGlobeLandCover')
    names = dict(zip(DeepGlobeLandCover.classes, (VOCABULARY[int(i)] for i in lut)))
    assert names == {
        'Urban land': 'urban land',
        'Agriculture land': 'agriculture land',
        'Rangeland': 'grass',
        'Forest land': 'forest land',
        'Water': 'water',
        'Barren land': 'barren land',
        'Unknown': 'background',
    }
    # a downstream mask maps to vocabulary ids by indexing the table
    downstream = torch.tensor([[0, 4], [6, 2]])
    assert lut[downstream].tolist() == [[11, 6], [0, 2]]


def test_label_map_by_name_and_overrides() -> None:
    # without a dataset table, names match the vocabulary (case and punctuation ignored)
    assert label_map(['Background', 'Storage-Tank', 'WARSHIP']).tolist() == [0, 25, 66]
    lut = label_map(['Rangeland', 'shrubs'], 'DeepGlobeLandCover', {'shrubs': 'tree'})
    assert lut.tolist() == [2, 5]
    assert label_map(['water'], 'LoveDA', {'water': 0}).tolist() == [0]


def test_label_map_errors() -> None:
    with pytest.raises(ValueError, match="class 'spaceport' has no vocabulary mapping in "):
        label_map(['building', 'spaceport'], 'LoveDA')
    with pytest.raises(ValueError, match=r"overrides=\{'spaceport'"):
        label_map(['spaceport'])
    with pytest.raises(ValueError, match="no label map for dataset 'Nowhere'"):
        label_map(['water'], 'Nowhere')
    with pytest.raises(ValueError, match="overrides\\['x'\\] = 'lava' is not a vocabulary"):
        label_map(['x'], overrides={'x': 'lava'})
    with pytest.raises(ValueError, match="overrides\\['x'\\] = 70 is outside the vocabulary"):
        label_map(['x'], overrides={'x': 70})
