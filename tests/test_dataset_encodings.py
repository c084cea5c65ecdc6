# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The dataset registry against TorchGeo's real dataset classes on fake files in their layouts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torchgeo.datasets import (
    DIOR,
    RESISC45,
    VHR10,
    DeepGlobeLandCover,
    EuroSAT,
    LoveDA,
    Potsdam2D,
    UCMerced,
    Vaihingen2D,
)

from torchgeo_earthsynth.compat import TORCHGEO_VERSION_TUPLE
from torchgeo_earthsynth.encodings import LABEL_MAPS
from torchgeo_earthsynth.encodings.registry import (
    ENCODINGS,
    DatasetEncoding,
    SelectBands,
    encoding_for,
    explicit_encoding,
)
from torchgeo_earthsynth.synthesis import Synthesizer
from torchgeo_earthsynth.transforms import SyntheticAugmentation
from torchgeo_earthsynth.vocabulary import BACKGROUND, CLASS_IDS, VOCABULARY

DATA = Path(__file__).parent / 'data'


def test_every_torchgeo_dataset_is_registered_under_its_class_name() -> None:
    for cls in (LoveDA, DeepGlobeLandCover, Potsdam2D, Vaihingen2D, UCMerced, EuroSAT):
        assert encoding_for(cls) is ENCODINGS[cls.__name__]
    for cls in (RESISC45, VHR10, DIOR):
        assert encoding_for(cls).name == cls.__name__


@pytest.mark.parametrize(
    ('cls', 'attribute'),
    [
        (LoveDA, 'classes'),
        (DeepGlobeLandCover, 'classes'),
        (Potsdam2D, 'classes'),
        (Vaihingen2D, 'classes'),
        (VHR10, 'categories'),
        (DIOR, 'classes'),
    ],
)
def test_classes_are_torchgeos_own(cls: type, attribute: str) -> None:
    assert ENCODINGS[cls.__name__].classes == tuple(getattr(cls, attribute))


def test_loveda_values_are_raw_mask_values_not_positions() -> None:
    loveda = ENCODINGS['LoveDA']
    assert loveda.value_of('no-data') == 0
    assert loveda.value_of('background') == 1
    assert loveda.value_of('agriculture') == 7
    assert loveda.ignore == (0,)
    lut = loveda.lut()
    # raw value -> vocabulary: 0 no-data and 1 background are both background
    names = [VOCABULARY[int(i)] for i in lut]
    assert names == [
        'background',
        'background',
        'building',
        'road',
        'water',
        'barren land',
        'forest land',
        'agriculture land',
    ]
    inverse = loveda.inverse()
    assert int(inverse[BACKGROUND]) == 1  # synthetic background is background, not no-data
    assert int(inverse[CLASS_IDS['water']]) == 4
    assert int(inverse[CLASS_IDS['tree']]) == -1
    assert int(loveda.inverse(unmapped=1)[CLASS_IDS['tree']]) == 1


def _fake_root(name: str) -> str:
    return str(DATA / name)


def test_loveda_real_masks_hold_registry_values() -> None:
    ds = LoveDA(_fake_root('loveda'), split='train')
    sample = ds[0]
    mask = sample['mask']
    enc = ENCODINGS['LoveDA']
    assert sample['image'].dtype == enc.dtype and sample['image'].shape[0] == len(enc.bands)
    assert 0 <= float(sample['image'].min()) and float(sample['image'].max()) <= enc.pixel_max
    # row r was written with raw value r % 8: each class is where the registry says
    for name in LoveDA.classes:
        value = enc.value_of(name)
        assert (mask[value] == value).all(), name
    # vocabulary of each row via the registry
    vocab = enc.lut()[mask]
    assert VOCABULARY[int(vocab[4, 0])] == 'water'
    assert VOCABULARY[int(vocab[7, 0])] == 'agriculture land'


@pytest.mark.parametrize(
    ('cls', 'folder', 'kwargs'),
    [
        (DeepGlobeLandCover, 'deepglobelandcover', {}),
        (Potsdam2D, 'potsdam', {}),
        (Vaihingen2D, 'vaihingen', {}),
    ],
)
def test_colour_mask_datasets_hold_registry_values(
    cls: type, folder: str, kwargs: dict[str, object]
) -> None:
    ds = cls(_fake_root(folder), split='train', **kwargs)
    sample = ds[0]
    enc = ENCODINGS[cls.__name__]
    mask = sample['mask']
    # row r was painted in the colour of class r % n
    for position, name in enumerate(enc.classes):
        assert (mask[position] == enc.value_of(name)).all(), name
    image = sample['image']
    assert image.dtype == enc.dtype
    assert image.shape[0] == len(enc.bands)
    assert float(image.max()) <= enc.pixel_max


@pytest.mark.parametrize(
    ('cls', 'folder'), [(UCMerced, 'ucmerced'), (RESISC45, 'resisc45'), (EuroSAT, 'eurosat')]
)
def test_classification_labels_are_registry_values(cls: type, folder: str) -> None:
    ds = cls(_fake_root(folder), split='train')
    enc = ENCODINGS[cls.__name__]
    assert tuple(ds.classes) == enc.classes
    for index in range(len(ds)):
        sample = ds[index]
        folder_name = Path(ds.samples[index][0]).parent.name
        assert int(sample['label']) == enc.value_of(folder_name)
        image = sample['image']
        assert image.dtype == enc.dtype
        assert image.shape[0] == len(enc.bands)
        assert float(image.max()) <= enc.pixel_max


def test_eurosat_rgb_bands() -> None:
    enc = ENCODINGS['EuroSAT']
    assert tuple(enc.bands[i] for i in enc.rgb or ()) == EuroSAT.rgb_bands
    assert enc.gain is None  # reflectance: no conversion of 0..255 RGB is assumed
    ds = EuroSAT(_fake_root('eurosat'), split='train', bands=EuroSAT.rgb_bands)
    image = ds[0]['image']
    assert image.shape[0] == 3 and float(image.max()) > 255  # reflectance, not 8-bit


def test_dior_labels_and_uint8_images() -> None:
    ds = DIOR(_fake_root('dior'), split='train')
    enc = ENCODINGS['DIOR']
    sample = ds[1]
    assert sample['image'].dtype == enc.dtype == torch.uint8
    names = [enc.classes[int(i)] for i in sample['label']]
    assert [enc.value_of(n) for n in names] == sample['label'].tolist() == [1, 11]
    assert [VOCABULARY[int(enc.lut()[i])] for i in sample['label']] == ['airport', 'harbor']


#: VHR10's category ids (COCO ``category_id``) and the vocabulary class each stands for.
VHR10_VOCABULARY = {
    1: 'plane',
    2: 'ship',
    3: 'storage tank',
    4: 'baseball diamond',
    5: 'tennis court',
    6: 'basketball court',
    7: 'ground track field',
    8: 'harbor',
    9: 'bridge',
    10: 'vehicle',
}


def _vhr10(vhr10_checksums: Callable[[Path], None]) -> VHR10:
    if TORCHGEO_VERSION_TUPLE < (0, 10):
        pytest.importorskip('pycocotools')  # TorchGeo 0.8 reads the annotations with it
    vhr10_checksums(DATA / 'vhr10')
    return VHR10(_fake_root('vhr10'), split='positive', checksum=True)


def test_vhr10_labels_are_category_ids(vhr10_checksums: Callable[[Path], None]) -> None:
    ds = _vhr10(vhr10_checksums)
    enc = ENCODINGS['VHR10']
    sample = ds[0]
    assert sample['label'].tolist() == [1, 6]
    assert [VOCABULARY[int(enc.lut()[i])] for i in sample['label']] == [
        'plane',
        'basketball court',
    ]
    assert VHR10.categories[2] == ('ship' if TORCHGEO_VERSION_TUPLE >= (0, 10) else 'ships')


def test_vhr10_box_labels_after_augmentation_class_by_class(
    vhr10_checksums: Callable[[Path], None],
) -> None:
    ds = _vhr10(vhr10_checksums)
    samples = [ds[i] for i in range(len(ds))]
    batch = {
        'image': torch.stack([s['image'] for s in samples]),
        'bbox_xyxy': [s['bbox_xyxy'] for s in samples],
        'label': [s['label'] for s in samples],
    }
    synthetic = SyntheticAugmentation(
        task='detection',
        dataset='VHR10',
        source='online',
        p=1.0,
        mode='append',
        synthesizer=Synthesizer.tiny(0, 32, num_inference_steps=1),
    )
    out, plan = synthetic.augment(batch)
    rows = plan.synthetic.nonzero().flatten().tolist()
    assert len(rows) == len(samples) and len(out['label']) == 2 * len(samples)
    checked: dict[int, int] = dict.fromkeys(VHR10_VOCABULARY, 0)
    for row in rows:
        source = int(plan.source_index[row])
        # boxes and labels of a synthetic row are its real row's, class by class
        assert torch.equal(out['label'][row], samples[source]['label'])
        assert torch.equal(out['bbox_xyxy'][row], samples[source]['bbox_xyxy'])
        for category, box in zip(out['label'][row].tolist(), out['bbox_xyxy'][row]):
            # the box's last pixel: inside no smaller box, so it holds the box's class
            y, x = int(box[3]) - 1, int(box[2]) - 1
            name = VOCABULARY[int(plan.condition[row, y, x])]
            assert name == VHR10_VOCABULARY[category], (VHR10.categories[category], name)
            checked[category] += 1
    assert checked == dict.fromkeys(VHR10_VOCABULARY, 2)  # every category, in two images


def test_classification_encodings_give_each_vocabulary_id_one_class() -> None:
    # two classes on one id would make one synthetic image stand for both
    for enc in ENCODINGS.values():
        if enc.task == 'classification':
            ids = [v for v in enc.vocabulary if v != BACKGROUND]
            assert len(ids) == len(set(ids)), enc.name


def test_label_maps_come_from_the_registry() -> None:
    assert set(LABEL_MAPS) == set(ENCODINGS)
    assert LABEL_MAPS['LoveDA']['agriculture'] == CLASS_IDS['agriculture land']
    assert LABEL_MAPS['DeepGlobeLandCover']['rangeland'] == CLASS_IDS['grass']


def test_unknown_dataset_needs_an_explicit_map() -> None:
    with pytest.raises(ValueError, match=r"no encoding for dataset 'SpaceNet'.*explicit map"):
        encoding_for('SpaceNet')
    enc = explicit_encoding(['sky', 'lava', 'water'], overrides={'sky': 0, 'lava': 'bare land'})
    assert enc.values == (0, 1, 2)
    assert enc.lut().tolist() == [0, 1, 6]


def test_unmapped_classes_are_named_in_one_error() -> None:
    with pytest.raises(ValueError, match=r"classes \['spaceport', 'lava'\] have no vocabulary"):
        explicit_encoding(['water', 'spaceport', 'lava'])


def test_overrides_and_bad_tables() -> None:
    enc = ENCODINGS['LoveDA'].with_overrides({'Barren': 'bare land'})
    assert int(enc.lut()[5]) == CLASS_IDS['bare land']
    assert ENCODINGS['LoveDA'].with_overrides({}) is ENCODINGS['LoveDA']
    with pytest.raises(ValueError, match=r"overrides name \['lava'\], which are not classes"):
        ENCODINGS['LoveDA'].with_overrides({'lava': 1})
    with pytest.raises(ValueError, match='values must be distinct'):
        DatasetEncoding('x', 'segmentation', ('a', 'b'), (1, 1), (0, 0))
    with pytest.raises(ValueError, match='2 classes but 1 values'):
        DatasetEncoding('x', 'segmentation', ('a', 'b'), (1,), (0, 0))


def test_select_bands() -> None:
    sample = {'image': torch.arange(4.0)[:, None, None].expand(4, 2, 2), 'mask': torch.zeros(2)}
    out = SelectBands(ENCODINGS['Potsdam2D'].rgb or ())(sample)
    assert out['image'][:, 0, 0].tolist() == [0.0, 1.0, 2.0]
    assert out['mask'] is sample['mask']
    ds = Potsdam2D(_fake_root('potsdam'), split='train', transforms=SelectBands((0, 1, 2)))
    assert ds[0]['image'].shape[0] == 3
