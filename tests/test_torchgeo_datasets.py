# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""SyntheticAugmentation on TorchGeo's real datasets and datamodules (fake files, their layouts)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader
from torchgeo.datamodules import (
    DeepGlobeLandCoverDataModule,
    EuroSATDataModule,
    LoveDADataModule,
    Potsdam2DDataModule,
    RESISC45DataModule,
    UCMercedDataModule,
    Vaihingen2DDataModule,
)
from torchgeo.datamodules.utils import collate_fn_detection
from torchgeo.datasets import DIOR, EuroSAT, LoveDA

from torchgeo_earthsynth.bank import SyntheticBank
from torchgeo_earthsynth.encodings.registry import ENCODINGS, SelectBands
from torchgeo_earthsynth.synthesis import Synthesizer
from torchgeo_earthsynth.transforms import SyntheticAugmentation, attach
from torchgeo_earthsynth.transforms.synthetic_rows import BANK, REAL
from torchgeo_earthsynth.vocabulary import CLASS_IDS

DATA = Path(__file__).parent / 'data'
SIZE = 32


class ListBank:
    """An in-memory bank: sample dicts drawn in a seeded order."""

    def __init__(self, samples: list[dict[str, Any]]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        classes: Sequence[int] | None = None,
    ) -> list[dict[str, Any]]:
        pool = [
            s
            for s in self.samples
            if classes is None or any(bool((s['mask'] == c).any()) for c in classes)
        ]
        if not pool:
            raise ValueError('no sample')
        order = torch.randperm(len(pool), generator=generator).tolist()
        return [pool[i] for i in (order * n)[:n]]


def banded(ids: Sequence[int], seed: int = 0) -> dict[str, Any]:
    """A bank sample whose mask has horizontal bands of ``ids`` (vocabulary ids)."""
    rows = torch.arange(SIZE) * len(ids) // SIZE
    mask = torch.tensor(list(ids))[rows][:, None].expand(SIZE, SIZE).clone()
    image = torch.randint(0, 256, (3, SIZE, SIZE), generator=torch.Generator().manual_seed(seed))
    return {'image': image.float(), 'mask': mask.long()}


def first_batch(dm: Any) -> dict[str, Any]:
    dm.setup('fit')
    batch: dict[str, Any] = next(iter(dm.train_dataloader()))
    return batch


LAND_COVER = [CLASS_IDS[n] for n in ('background', 'building', 'road', 'water', 'barren land')]
LAND_COVER += [CLASS_IDS[n] for n in ('forest land', 'agriculture land', 'urban land', 'grass')]


# ---------------------------------------------------------------------- segmentation
def test_loveda_readme_call_writes_loveda_mask_values() -> None:
    bank = ListBank([banded(LAND_COVER[:7])])
    dm = LoveDADataModule(root=str(DATA / 'loveda'), batch_size=2)
    synthetic = SyntheticAugmentation(
        LoveDA.classes, dataset='LoveDA', source='bank', p=1.0, bank=bank
    )
    attach(dm, synthetic)
    out, plan = synthetic.augment(first_batch(dm))
    assert (plan.origin == BANK).all()
    enc = ENCODINGS['LoveDA']
    expected = {  # vocabulary id of the bank band -> LoveDA raw mask value
        CLASS_IDS['background']: enc.value_of('background'),  # 1, never 0 (no-data)
        CLASS_IDS['building']: 2,
        CLASS_IDS['road']: 3,
        CLASS_IDS['water']: 4,
        CLASS_IDS['barren land']: 5,
        CLASS_IDS['forest land']: 6,
        CLASS_IDS['agriculture land']: 7,
    }
    condition = plan.condition[0]
    for vocab_id, value in expected.items():
        where = condition == vocab_id
        assert where.any()
        assert (out['mask'][0][where] == value).all(), vocab_id
    # pixels: 0..255 as LoveDA's, the bank image itself
    assert torch.equal(out['image'][0], bank.samples[0]['image'])


def test_loveda_online_condition_reads_raw_values() -> None:
    synth = Synthesizer.tiny(0, SIZE, num_inference_steps=2)
    dm = LoveDADataModule(root=str(DATA / 'loveda'), batch_size=2)
    synthetic = SyntheticAugmentation(dataset='LoveDA', source='online', p=1.0, synthesizer=synth)
    attach(dm, synthetic)
    batch = first_batch(dm)
    out, plan = synthetic.augment(batch)
    real = batch['mask'][0]
    vocab = {0: 'background', 1: 'background', 2: 'building', 3: 'road', 4: 'water'}
    vocab |= {5: 'barren land', 6: 'forest land', 7: 'agriculture land'}
    for value, name in vocab.items():
        assert (plan.condition[0][real == value] == CLASS_IDS[name]).all(), value
    assert torch.equal(out['mask'], batch['mask'])  # the label is the real mask, no-data kept
    assert 0 <= float(out['image'].min()) and float(out['image'].max()) <= 255


@pytest.mark.parametrize(
    ('module', 'folder', 'kwargs', 'expected'),
    [
        (
            DeepGlobeLandCoverDataModule,
            'deepglobelandcover',
            {},
            {'urban land': 0, 'agriculture land': 1, 'grass': 2, 'forest land': 3},
        ),
        (
            Potsdam2DDataModule,
            'potsdam',
            {'transforms': SelectBands((0, 1, 2))},
            {'background': 0, 'pavement': 1, 'building': 2, 'grass': 3, 'tree': 4},
        ),
    ],
)
def test_colour_mask_datasets_get_their_values(
    module: type, folder: str, kwargs: dict[str, Any], expected: dict[str, int]
) -> None:
    ids = [CLASS_IDS[name] for name in expected]
    bank = ListBank([banded(ids)])
    dm = module(root=str(DATA / folder), batch_size=2, val_split_pct=0.5, **kwargs)
    synthetic = SyntheticAugmentation(source='bank', p=1.0, bank=bank)
    attach(dm, synthetic)  # bound to the datamodule's dataset from the registry
    assert synthetic.encoding is ENCODINGS[dm.dataset_class.__name__]
    batch = first_batch(dm)
    out, plan = synthetic.augment(batch)
    for name, value in expected.items():
        where = plan.condition[0] == CLASS_IDS[name]
        assert where.any() and (out['mask'][0][where] == value).all(), name
    assert float(batch['image'].max()) <= 255
    # and then the datamodule's own train_aug (normalise, crop) still runs
    assert dm.train_aug is synthetic and synthetic.then is not None
    normalised = synthetic(batch)
    assert float(normalised['image'].max()) <= 1.0


def test_potsdam_without_rgb_selection_is_refused_at_attach() -> None:
    dm = Potsdam2DDataModule(root=str(DATA / 'potsdam'), batch_size=2)
    synthetic = SyntheticAugmentation(source='bank', p=1.0, bank=ListBank([banded([0])]))
    with pytest.raises(ValueError, match=r"RGB bands only: select bands \('R', 'G', 'B'\)"):
        attach(dm, synthetic)
    assert dm.train_aug is not synthetic


def test_vaihingen_false_colour_is_refused_at_attach() -> None:
    dm = Vaihingen2DDataModule(root=str(DATA / 'vaihingen'), batch_size=2)
    synthetic = SyntheticAugmentation(source='bank', p=1.0, bank=ListBank([banded([0])]))
    with pytest.raises(ValueError, match=r'Vaihingen2D images are .*IR.*no true-colour RGB'):
        attach(dm, synthetic)


# ---------------------------------------------------------------------- classification
@pytest.mark.parametrize(
    ('module', 'folder'), [(UCMercedDataModule, 'ucmerced'), (RESISC45DataModule, 'resisc45')]
)
def test_classification_bank_samples_show_the_label(module: type, folder: str) -> None:
    enc = ENCODINGS[module.__name__.removesuffix('DataModule')]
    mapped = sorted({v for v in enc.vocabulary if v})
    bank = ListBank([banded([0, v], seed=v) for v in mapped])
    dm = module(root=str(DATA / folder), batch_size=len(enc.classes))
    synthetic = SyntheticAugmentation(task='classification', source='bank', p=1.0, bank=bank)
    attach(dm, synthetic)
    batch = first_batch(dm)
    out, plan = synthetic.augment(batch)
    assert torch.equal(out['label'], batch['label'])
    for row, label in enumerate(batch['label'].tolist()):
        vocab_id = enc.vocabulary[enc.values.index(label)]
        if vocab_id == 0:  # no vocabulary counterpart: never synthesised
            assert plan.origin[row] == REAL, enc.classes[label]
        else:
            assert plan.origin[row] == BANK, enc.classes[label]
            assert (plan.condition[row] == vocab_id).any(), enc.classes[label]


def test_eurosat_needs_rgb_bands_and_a_scale() -> None:
    bank = ListBank([banded([0, CLASS_IDS['agriculture land']])])
    all_bands = EuroSATDataModule(root=str(DATA / 'eurosat'), batch_size=4)
    synthetic = SyntheticAugmentation(
        task='classification', source='bank', bank=bank, image_scale=1.0
    )
    with pytest.raises(ValueError, match=r"RGB bands only: select bands \('B04', 'B03', 'B02'\)"):
        attach(all_bands, synthetic)
    rgb = EuroSATDataModule(root=str(DATA / 'eurosat'), batch_size=4, bands=EuroSAT.rgb_bands)
    with pytest.raises(ValueError, match=r'EuroSAT images are .* pass image_scale='):
        attach(rgb, SyntheticAugmentation(task='classification', source='bank', bank=bank))
    # with 8-bit scale the datamodule's reflectance normalisation gives it away
    with pytest.raises(ValueError, match=r'normalises with mean .* pass image_scale'):
        attach(rgb, synthetic)


def test_eurosat_synthetic_rgb_in_reflectance_scale() -> None:
    gain = 10000 / 255 / 2.5
    sample = banded([CLASS_IDS['agriculture land']])
    sample['image'] = torch.tensor([10.0, 20.0, 30.0])[:, None, None].expand(3, SIZE, SIZE)
    bank = ListBank([sample])
    dm = EuroSATDataModule(root=str(DATA / 'eurosat'), batch_size=10, bands=EuroSAT.rgb_bands)
    synthetic = SyntheticAugmentation(
        task='classification', source='bank', p=1.0, bank=bank, image_scale=gain
    )
    attach(dm, synthetic)
    batch = first_batch(dm)
    out, plan = synthetic.augment(batch)
    annual_crop = (batch['label'] == 0).nonzero().flatten()
    assert len(annual_crop) and (plan.origin[annual_crop] == BANK).all()
    pixels = out['image'][annual_crop[0]]  # resized to EuroSAT's 16 px, then scaled
    assert torch.allclose(pixels[:, 0, 0], torch.tensor([10.0, 20.0, 30.0]) * gain)
    assert float(batch['image'].max()) > 255  # real rows are reflectance too


def test_contains_rule_hands_an_image_to_one_class_only() -> None:
    # one image of mostly agriculture with a forest strip: AnnualCrop's, not also Forest's
    ids = [CLASS_IDS['agriculture land']] * 3 + [CLASS_IDS['forest land']]
    bank = ListBank([banded(ids)])
    synthetic = SyntheticAugmentation(
        dataset='EuroSAT',
        task='classification',
        source='bank',
        p=1.0,
        bank=bank,
        class_rule='contains',
        image_scale=1.0,
    )
    batch = {'image': torch.full((2, 3, SIZE, SIZE), 100.0), 'label': torch.tensor([0, 1])}
    _, plan = synthetic.augment(batch)
    assert plan.origin.tolist() == [BANK, REAL]
    assert synthetic.stats['unavailable'] == 1


def test_normalised_batch_is_refused() -> None:
    bank = ListBank([banded([0, CLASS_IDS['water']])])
    synthetic = SyntheticAugmentation(dataset='LoveDA', source='bank', bank=bank)
    batch = {'image': torch.rand(2, 3, SIZE, SIZE), 'mask': torch.ones(2, SIZE, SIZE).long()}
    with pytest.raises(ValueError, match='looks normalised already'):
        synthetic.augment(batch)
    batch['image'] = batch['image'] * 1000
    with pytest.raises(ValueError, match=r'batch images span .* LoveDA images are'):
        synthetic.augment(batch)


def test_classes_not_the_datasets_are_refused() -> None:
    with pytest.raises(ValueError, match=r"missing: \['no-data'\].*names='LoveDA'"):
        SyntheticAugmentation(LoveDA.classes[:-1], dataset='LoveDA', bank=ListBank([]))
    with pytest.raises(ValueError, match=r"classes \['spaceship', 'lava'\] have no vocabulary"):
        SyntheticAugmentation(('water', 'spaceship', 'lava'), bank=ListBank([]))


def test_missing_bank_folder_says_so(tmp_path: Path) -> None:
    bank = SyntheticBank(tmp_path / 'nope')
    synthetic = SyntheticAugmentation(dataset='LoveDA', source='bank', bank=bank)
    batch = {'image': torch.zeros(1, 3, SIZE, SIZE), 'mask': torch.ones(1, SIZE, SIZE).long()}
    with pytest.raises(ValueError, match=r'bank folder .*nope does not exist'):
        synthetic.augment(batch)
    assert not (tmp_path / 'nope').exists()


# ---------------------------------------------------------------------- detection
def test_dior_boxes_become_conditions_of_their_classes() -> None:
    synth = Synthesizer.tiny(0, SIZE, num_inference_steps=2)
    loader = DataLoader(
        DIOR(str(DATA / 'dior'), split='train'), batch_size=2, collate_fn=collate_fn_detection
    )
    batch = next(iter(loader))
    assert batch['image'].dtype == torch.uint8
    synthetic = SyntheticAugmentation(
        dataset='DIOR', task='detection', source='online', p=1.0, synthesizer=synth
    )
    out, plan = synthetic.augment(batch)
    enc = ENCODINGS['DIOR']
    for row in range(2):
        large, small = batch['label'][row].tolist()  # boxes (2, 2, 30, 20) and (4, 4, 12, 12)
        assert int(plan.condition[row, 15, 20]) == enc.vocabulary[large]
        assert int(plan.condition[row, 8, 8]) == enc.vocabulary[small]  # smallest box wins
        assert int(plan.condition[row, 25, 25]) == 0
    assert out['image'].dtype == torch.uint8
    assert out['label'] is batch['label']
