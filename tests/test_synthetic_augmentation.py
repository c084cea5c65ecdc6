# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Tests for SyntheticAugmentation, its callback, the downstream datamodules and configs."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kornia.augmentation as K
import pytest
import torch
from torch import Tensor
from torch.utils.data import default_collate

from torchgeo_earthsynth.bank import SyntheticBank
from torchgeo_earthsynth.datamodules.downstream import (
    MiniClassificationDataModule,
    MiniSegmentationDataModule,
    dominant_class,
    reverse_map,
)
from torchgeo_earthsynth.datasets import EarthSynth180K
from torchgeo_earthsynth.encodings import label_map
from torchgeo_earthsynth.rfilter.protocol import KeyedFilter
from torchgeo_earthsynth.synthesis import Synthesizer
from torchgeo_earthsynth.transforms.cf_comp import CounterfactualComposition
from torchgeo_earthsynth.transforms.synthetic_augmentation import (
    BANK,
    GENERATED,
    REAL,
    SynthesizerLoader,
    SyntheticAugmentation,
    rasterize_boxes,
)
from torchgeo_earthsynth.transforms.synthetic_callback import SyntheticAugmentationCallback, attach
from torchgeo_earthsynth.vocabulary import CLASS_IDS, prompt_from_ids

C = CLASS_IDS
SEG_CLASSES = MiniSegmentationDataModule.classes
CLS_CLASSES = MiniClassificationDataModule.classes
CONFIGS = Path(__file__).parents[1] / 'configs'


@pytest.fixture(scope='module')
def synth() -> Synthesizer:
    return Synthesizer.tiny(0, 32, num_inference_steps=2)


@pytest.fixture(scope='module')
def corpus(mini_root: Path) -> list[dict[str, Any]]:
    dataset = EarthSynth180K(mini_root, split='train')
    return [dataset[i] for i in range(len(dataset))]


@pytest.fixture(scope='module')
def bank_samples(corpus: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Corpus layouts with inverted images, so they differ from the real ones."""
    return [{**s, 'image': 255 - s['image']} for s in corpus]


@pytest.fixture(scope='module')
def bank_root(bank_samples: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp('bank')
    SyntheticBank(root, durable=False).add(bank_samples)
    return root


@pytest.fixture
def bank(bank_root: Path) -> SyntheticBank:
    return SyntheticBank(bank_root)


def make_bank(path: Path, samples: list[dict[str, Any]]) -> SyntheticBank:
    bank = SyntheticBank(path, durable=False)
    bank.add(samples)
    return bank.refresh()


def seg_batch(mini_root: Path, n: int = 6) -> dict[str, Any]:
    dm = MiniSegmentationDataModule(root=mini_root)
    dm.setup('fit')
    assert dm.train_dataset is not None
    return default_collate([dm.train_dataset[i] for i in range(n)])


def cls_batch(mini_root: Path, n: int = 6) -> dict[str, Any]:
    dm = MiniClassificationDataModule(root=mini_root)
    dm.setup('fit')
    assert dm.train_dataset is not None
    return default_collate([dm.train_dataset[i] for i in range(n)])


def clone(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v.clone() if isinstance(v, Tensor) else list(v) for k, v in batch.items()}


# ---------------------------------------------------------------------- rasterisation
def test_rasterize_boxes_pixel_centres_and_overlaps() -> None:
    lut = torch.tensor([0, C['building'], C['small vehicle']])
    boxes = [torch.tensor([[0.0, 0.0, 6.0, 4.0], [2.0, 1.0, 4.0, 3.0]]), torch.zeros(0, 4)]
    labels = [torch.tensor([1, 2]), torch.zeros(0, dtype=torch.long)]
    out = rasterize_boxes(boxes, labels, lut, (8, 8))
    expected = torch.zeros(2, 8, 8, dtype=torch.long)
    expected[0, 0:4, 0:6] = C['building']
    expected[0, 1:3, 2:4] = C['small vehicle']  # the smaller box is drawn on top
    assert out.dtype == torch.long
    assert torch.equal(out, expected)
    # a box covering less than half a pixel covers no pixel centre
    thin = rasterize_boxes([torch.tensor([[1.1, 1.1, 1.4, 5.0]])], [torch.tensor([1])], lut, (8, 8))
    assert not thin.any()
    with pytest.raises(ValueError, match=r'box labels must be in \[0, 2\], got \[3\]'):
        rasterize_boxes([torch.tensor([[0.0, 0, 2, 2]])], [torch.tensor([3])], lut, (4, 4))
    with pytest.raises(ValueError, match='2 boxes but 1 labels'):
        rasterize_boxes([torch.zeros(2, 4)], [torch.tensor([1])], lut, (4, 4))


# ---------------------------------------------------------------------- arguments
def test_unmapped_class_is_named(bank: SyntheticBank) -> None:
    with pytest.raises(ValueError, match="class 'spaceship' has no vocabulary mapping"):
        SyntheticAugmentation(('background', 'spaceship'), source='bank', bank=bank)


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        ({'p': 1.5, 'source': 'bank'}, r'p must be in \[0, 1\], got 1.5'),
        ({'source': 'online'}, "source='online' needs a synthesizer"),
        ({'source': 'bank', 'bank': None}, "source='bank' needs a bank"),
        ({'task': 'detection', 'source': 'both', 'bank': None}, "source='both' needs a"),
        (
            {'task': 'classification', 'source': 'online', 'synthesizer': 'S', 'bank': None},
            'needs layouts',
        ),
        ({'source': 'bank', 'unmapped_index': 9}, r'unmapped_index must be in \[0, 6\]'),
    ],
)
def test_bad_arguments(bank: SyntheticBank, kwargs: dict[str, Any], match: str) -> None:
    kwargs = {'bank': bank, **kwargs}
    with pytest.raises(ValueError, match=match):
        SyntheticAugmentation(SEG_CLASSES, names='LoveDA', **kwargs)


def test_synthesizer_loader_needs_one_source() -> None:
    with pytest.raises(ValueError, match='exactly one of pretrained'):
        SynthesizerLoader()
    with pytest.raises(ValueError, match='exactly one of pretrained'):
        SynthesizerLoader(pretrained='x', tiny=True)


def test_unbound_and_missing_keys(bank: SyntheticBank) -> None:
    aug = SyntheticAugmentation(source='bank', bank=bank)
    batch = {'image': torch.zeros(2, 3, 8, 8), 'mask': torch.zeros(2, 8, 8, dtype=torch.long)}
    with pytest.raises(ValueError, match='has no classes'):
        aug(batch)
    aug.bind(SEG_CLASSES, names='LoveDA')
    with pytest.raises(ValueError, match=r"needs batch keys \['image', 'mask'\]; missing"):
        aug({'image': batch['image']})
    with pytest.raises(ValueError, match='is bound to classes'):
        aug.bind(('background', 'water'))


# ---------------------------------------------------------------------- segmentation
def test_segmentation_online_replace_keeps_mask_as_label(
    mini_root: Path, synth: Synthesizer
) -> None:
    batch = seg_batch(mini_root)
    real = clone(batch)
    then = K.AugmentationSequential(K.Normalize(mean=0, std=255), data_keys=None, keepdim=True)
    aug = SyntheticAugmentation(
        SEG_CLASSES, names='LoveDA', source='online', p=1.0, synthesizer=synth, then=then
    )
    raw, plan = aug.augment(clone(batch))
    lut = label_map(SEG_CLASSES, dataset='LoveDA')
    assert plan.origin.tolist() == [GENERATED] * 6
    assert aug.stats['generated'] == aug.stats['replaced'] == 6
    assert aug.stats['seen'] == 6
    assert torch.equal(raw['mask'], real['mask'])  # the label is the condition's own mask
    assert torch.equal(plan.condition, lut[real['mask']])
    changed = (raw['image'] - real['image']).abs().flatten(1).amax(1)
    assert (changed > 1).all()
    assert raw['image'].shape == real['image'].shape and raw['image'].dtype == torch.float32
    # then (the datamodule's normalisation) runs after
    out = aug(clone(batch))
    assert float(out['image'].max()) <= 1.0 and torch.equal(out['mask'], real['mask'])


def test_segmentation_append_copies_other_fields(mini_root: Path, synth: Synthesizer) -> None:
    batch = seg_batch(mini_root, 4)
    batch['index'] = torch.arange(4)
    batch['path'] = ['a', 'b', 'c', 'd']
    batch['prompt'] = ['real'] * 4
    batch['source'] = ['LoveDA'] * 4
    batch['categories'] = torch.zeros(4, 67)
    aug = SyntheticAugmentation(
        SEG_CLASSES,
        names='LoveDA',
        source='online',
        p=0.5,
        mode='append',
        synthesizer=synth,
        seed=3,
    )
    out, plan = aug.augment(clone(batch))
    rows = plan.source_index[4:].tolist()
    n = len(rows)
    assert n > 0 and aug.stats['appended'] == n and aug.stats['replaced'] == 0
    assert out['image'].shape[0] == out['mask'].shape[0] == 4 + n
    assert torch.equal(out['image'][:4], batch['image'])
    assert out['index'].tolist() == [0, 1, 2, 3, *rows]
    assert out['path'] == ['a', 'b', 'c', 'd', *('abcd'[r] for r in rows)]
    assert torch.equal(out['mask'][4:], batch['mask'][rows])
    assert plan.origin.tolist() == [REAL] * 4 + [GENERATED] * n
    assert (plan.condition[:4] == -1).all()
    # the synthetic rows describe themselves; the real ones are untouched
    assert out['prompt'][:4] == ['real'] * 4 and out['source'] == ['LoveDA'] * 4 + ['synthetic'] * n
    assert not out['categories'][:4].any()
    for k, cond in enumerate(plan.condition[4:]):
        ids = torch.unique(cond).tolist()
        assert out['prompt'][4 + k] == prompt_from_ids(ids)
        assert out['categories'][4 + k].nonzero().flatten().tolist() == ids


def test_segmentation_bank_pairs_map_back(
    mini_root: Path, bank: SyntheticBank, bank_samples: list[dict[str, Any]]
) -> None:
    batch = seg_batch(mini_root, 8)
    aug = SyntheticAugmentation(SEG_CLASSES, names='LoveDA', source='bank', p=1.0, bank=bank)
    inverse = reverse_map(label_map(SEG_CLASSES, dataset='LoveDA'), fill=-1)
    out, plan = aug.augment(clone(batch))
    assert aug.stats['from_bank'] == aug.stats['replaced'] == 8
    assert (plan.origin == BANK).all()
    assert (inverse[plan.condition] >= 0).all()  # only bank samples whose every id maps back
    assert torch.equal(out['mask'], inverse[plan.condition])
    bank_pairs = {(s['image'].numpy().tobytes(), s['mask'].numpy().tobytes()) for s in bank_samples}
    for image, cond in zip(out['image'], plan.condition):
        assert (image.numpy().tobytes(), cond.numpy().tobytes()) in bank_pairs
    # with unmapped ids allowed, scenes with e.g. grass are drawn too, grass becoming background
    loose = SyntheticAugmentation(
        SEG_CLASSES, names='LoveDA', source='bank', p=1.0, bank=bank, unmapped_index=0
    )
    seen_grass = False
    for _ in range(4):
        out, plan = loose.augment(clone(batch))
        grass = plan.condition == C['grass']
        seen_grass |= bool(grass.any())
        assert (out['mask'][grass] == 0).all()
    assert seen_grass


def test_cf_comp_recomposed_labels_are_exact(mini_root: Path, synth: Synthesizer) -> None:
    batch = seg_batch(mini_root, 8)
    lut = label_map(SEG_CLASSES, dataset='LoveDA')
    cf = CounterfactualComposition(real_share=0.0, tile_prob=0.5, seed=0)
    aug = SyntheticAugmentation(
        SEG_CLASSES, names='LoveDA', source='online', p=1.0, synthesizer=synth, cf_comp=cf
    )
    out, plan = aug.augment(clone(batch))
    assert torch.equal(lut[out['mask']], plan.condition)
    assert not torch.equal(plan.condition, lut[batch['mask']])  # really recomposed


def test_reproducible_with_seed(mini_root: Path, bank: SyntheticBank, synth: Synthesizer) -> None:
    batch = seg_batch(mini_root, 8)

    def run(seed: int) -> tuple[Tensor, Tensor]:
        aug = SyntheticAugmentation(
            SEG_CLASSES,
            names='LoveDA',
            source='both',
            p=0.5,
            bank=bank,
            synthesizer=synth,
            seed=seed,
        )
        out, plan = aug.augment(clone(batch))
        return out['image'], plan.origin

    first, again, other = run(1), run(1), run(2)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])
    assert {BANK, GENERATED} <= set(first[1].tolist()) | set(other[1].tolist())


def test_each_distributed_rank_draws_its_own_choices(
    mini_root: Path, bank: SyntheticBank, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = seg_batch(mini_root, 8)

    def origins(seed: int) -> Tensor:
        aug = SyntheticAugmentation(
            SEG_CLASSES, names='LoveDA', source='bank', p=0.5, bank=bank, seed=seed
        )
        return torch.stack([aug.augment(clone(batch))[1].origin for _ in range(3)])

    rank0, seed4 = origins(3), origins(4)
    monkeypatch.setattr(torch.distributed, 'is_initialized', lambda: True)
    monkeypatch.setattr(torch.distributed, 'get_rank', lambda: 1)
    rank1 = origins(3)
    assert not torch.equal(rank0, rank1)
    assert torch.equal(rank1, seed4)  # rank r draws as seed + r would


def test_rfilter_drops_keep_the_real_sample(mini_root: Path, synth: Synthesizer) -> None:
    batch = seg_batch(mini_root, 6)
    calls: list[dict[str, Any]] = []

    def by_batch(generated: dict[str, Any]) -> SimpleNamespace:  # RFilter-style protocol
        calls.append(generated)
        return SimpleNamespace(keep=torch.tensor([True, False] * 3))

    def by_parts(images: Tensor, masks: Tensor, prompts: list[str]) -> Tensor:
        return torch.tensor([False, True] * 3)

    lut = label_map(SEG_CLASSES, dataset='LoveDA')
    for rfilter, kept in ((by_batch, [0, 2, 4]), (KeyedFilter(by_parts), [1, 3, 5])):
        aug = SyntheticAugmentation(
            SEG_CLASSES,
            names='LoveDA',
            source='online',
            p=1.0,
            synthesizer=synth,
            rfilter=rfilter,
        )
        out, plan = aug.augment(clone(batch))
        assert aug.stats['generated'] == 6 and aug.stats['dropped_by_filter'] == 3
        assert aug.stats['replaced'] == 3
        assert plan.synthetic.nonzero().flatten().tolist() == kept
        dropped = [i for i in range(6) if i not in kept]
        assert torch.equal(out['image'][dropped], batch['image'][dropped])
    generated = calls[0]
    assert torch.equal(generated['mask'], lut[batch['mask']])
    assert torch.equal(generated['reference'], batch['image'])
    assert generated['prompt'][0].startswith('A satellite image of')


def test_real_rfilter_protocol(mini_root: Path, synth: Synthesizer) -> None:
    from torchgeo_earthsynth.rfilter import RFilter

    batch = seg_batch(mini_root, 6)
    rfilter = RFilter(alignment=False, clip_model=None, layout=False, novelty_threshold=0.5)
    aug = SyntheticAugmentation(
        SEG_CLASSES, names='LoveDA', source='online', p=1.0, synthesizer=synth, rfilter=rfilter
    )
    out, plan = aug.augment(clone(batch))
    total = rfilter.counts['total']
    assert total['seen'] == aug.stats['generated'] == 6
    assert total['dropped'] == aug.stats['dropped_by_filter']
    assert total['kept'] == aug.stats['replaced'] == int(plan.synthetic.sum())
    real = ~plan.synthetic
    assert torch.equal(out['image'][real], batch['image'][real])


def test_add_to_bank(mini_root: Path, synth: Synthesizer, tmp_path: Path) -> None:
    batch = seg_batch(mini_root, 4)
    sink = SyntheticBank(tmp_path, durable=False)
    aug = SyntheticAugmentation(
        SEG_CLASSES,
        names='LoveDA',
        source='both',
        p=1.0,
        bank=sink,
        synthesizer=synth,
        add_to_bank=True,
    )
    aug.augment(clone(batch))  # the empty bank falls back to online generation
    assert aug.stats['generated'] == aug.stats['added_to_bank'] == 4
    assert len(sink.refresh()) == 4
    added = sink.sample(1)[0]
    assert added['image'].shape == (3, 32, 32) and added['source'] == 'synthetic'
    assert added['prompt'] == prompt_from_ids(torch.unique(added['mask']).tolist())


def test_empty_bank_is_an_error(mini_root: Path, tmp_path: Path) -> None:
    empty = SyntheticBank(tmp_path)
    aug = SyntheticAugmentation(SEG_CLASSES, names='LoveDA', source='bank', bank=empty)
    with pytest.raises(ValueError, match='is empty'):
        aug.augment(seg_batch(mini_root, 2))


# ---------------------------------------------------------------------- classification
def test_classification_online_layouts(mini_root: Path, synth: Synthesizer) -> None:
    batch = cls_batch(mini_root)
    lut = label_map(CLS_CLASSES)
    aug = SyntheticAugmentation(
        CLS_CLASSES,
        task='classification',
        source='online',
        p=1.0,
        synthesizer=synth,
        layouts=EarthSynth180K(mini_root),
    )
    out, plan = aug.augment(clone(batch))
    assert aug.stats['generated'] == aug.stats['replaced'] == 6
    assert torch.equal(out['label'], batch['label'])
    for label, cond in zip(batch['label'], plan.condition):
        vocab_id = int(lut[label])
        assert set(torch.unique(cond).tolist()) == {0, vocab_id}  # a single-category layout
    assert ((out['image'] - batch['image']).abs().flatten(1).amax(1) > 1).all()


def test_classification_bank_dominant_rule(mini_root: Path, bank: SyntheticBank) -> None:
    batch = cls_batch(mini_root, 8)
    lut = label_map(CLS_CLASSES)
    aug = SyntheticAugmentation(
        CLS_CLASSES, task='classification', source='bank', p=1.0, bank=bank, class_rule='dominant'
    )
    out, plan = aug.augment(clone(batch))
    assert aug.stats['from_bank'] == 8
    assert torch.equal(out['label'], batch['label'])
    for label, cond in zip(out['label'], plan.condition):
        assert dominant_class(cond) == int(lut[label])


def test_classification_unavailable_class_keeps_real(tmp_path: Path) -> None:
    water = {'image': torch.full((3, 32, 32), 7.0), 'mask': torch.full((32, 32), C['water'])}
    water_only = make_bank(tmp_path, [water])
    batch = {'image': torch.zeros(2, 3, 32, 32), 'label': torch.tensor([2, 3])}  # water, building
    aug = SyntheticAugmentation(
        CLS_CLASSES, task='classification', source='bank', p=1.0, bank=water_only
    )
    out, plan = aug.augment(clone(batch))
    assert plan.origin.tolist() == [BANK, REAL]
    assert aug.stats['unavailable'] == 1 and aug.stats['from_bank'] == 1
    assert (out['image'][0] == 7).all() and (out['image'][1] == 0).all()
    with pytest.raises(ValueError, match=r'expected indices of'):
        aug.augment({'image': torch.zeros(1, 3, 32, 32), 'label': torch.tensor([5])})


# ---------------------------------------------------------------------- detection
def test_detection_online(synth: Synthesizer) -> None:
    classes = ('background', 'plane', 'ship')
    boxes = [torch.tensor([[2.0, 2.0, 12.0, 10.0]]), torch.tensor([[0.0, 16.0, 32.0, 32.0]])]
    labels = [torch.tensor([1]), torch.tensor([2])]
    batch = {'image': torch.zeros(2, 3, 32, 32), 'bbox_xyxy': boxes, 'label': labels}
    aug = SyntheticAugmentation(
        classes, task='detection', source='online', p=1.0, mode='append', synthesizer=synth
    )
    out, plan = aug.augment(batch)
    lut = label_map(classes)
    assert out['image'].shape == (4, 3, 32, 32)
    assert out['bbox_xyxy'] == boxes + boxes and out['label'] == labels + labels
    assert torch.equal(plan.condition[2:], rasterize_boxes(boxes, labels, lut, (32, 32)))
    assert int(plan.condition[2, 5, 5]) == C['plane'] and int(plan.condition[3, 20, 3]) == C['ship']


# ---------------------------------------------------------------------- callback
def test_callback_modifies_normalised_batch_in_place(mini_root: Path, bank: SyntheticBank) -> None:
    batch = seg_batch(mini_root, 6)
    normalised = {'image': batch['image'] / 255, 'mask': batch['mask']}
    original = clone(normalised)
    aug = SyntheticAugmentation(
        SEG_CLASSES, names='LoveDA', source='bank', p=0.5, bank=bank, seed=1
    )
    callback = SyntheticAugmentationCallback(aug, mean=0.0, std=255.0)
    callback.on_train_batch_start(None, None, normalised, 0)  # type: ignore[arg-type]
    plan = aug.last_plan
    assert plan is not None
    synthetic = plan.synthetic
    assert 0 < int(synthetic.sum()) < 6
    assert torch.equal(normalised['image'][~synthetic], original['image'][~synthetic])
    assert float(normalised['image'].max()) <= 1.0
    with pytest.raises(ValueError, match='dict batches only'):
        callback.on_train_batch_start(None, None, [batch['image']], 0)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- datamodules
def test_downstream_datamodules(mini_root: Path, bank: SyntheticBank) -> None:
    seg = MiniSegmentationDataModule(root=mini_root)
    seg.setup('fit')
    assert seg.train_dataset is not None and seg.val_dataset is not None
    corpus = EarthSynth180K(mini_root)
    sample = seg.train_dataset[0]
    assert set(sample) == {'image', 'mask'}
    assert torch.equal(sample['mask'], seg.reverse[corpus[0]['mask']])
    assert int(seg.reverse[C['building']]) == 1 and int(seg.reverse[C['grass']]) == 0
    cls = MiniClassificationDataModule(root=mini_root)
    cls.setup('fit')
    assert cls.train_dataset is not None
    lut = label_map(CLS_CLASSES)
    n = len(cls.train_dataset)  # type: ignore[arg-type]
    assert 0 < n < len(corpus)
    for i in range(n):
        item = cls.train_dataset[i]
        scene = corpus[cls.train_dataset.items[i][0]]  # type: ignore[attr-defined]
        assert dominant_class(scene['mask']) == int(lut[item['label']])

    aug = SyntheticAugmentation(source='bank', bank=bank)
    dm = MiniSegmentationDataModule(root=mini_root, synthetic=aug)
    assert dm.train_aug is aug and aug.then is dm.aug and aug.classes == SEG_CLASSES
    attach(dm, aug)  # a second attach changes nothing
    assert aug.then is dm.aug
    with pytest.raises(ValueError, match='is bound to classes'):
        MiniClassificationDataModule(root=mini_root, synthetic=aug)


# ---------------------------------------------------------------------- drop-in proof
@pytest.mark.parametrize(
    ('task', 'source'),
    [('segmentation', 'online'), ('segmentation', 'bank'), ('classification', 'online')],
)
def test_torchgeo_cli_trains_with_synthetic_samples(
    task: str,
    source: str,
    mini_root: Path,
    bank_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from torchgeo.main import main

    # Record what the module really did inside TorchGeo's own CLI run.
    calls: list[tuple[SyntheticAugmentation, dict[str, Any], dict[str, Any], Any]] = []
    augment = SyntheticAugmentation.augment

    def spy(self: SyntheticAugmentation, batch: dict[str, Any]) -> Any:
        real = clone(batch)
        out, plan = augment(self, batch)
        calls.append((self, real, out, plan))
        return out, plan

    monkeypatch.setattr(SyntheticAugmentation, 'augment', spy)
    monkeypatch.setattr(sys, 'argv', ['torchgeo'])  # pytest's own arguments are not the CLI's
    synthetic = '--data.init_args.synthetic.init_args.'
    args = [
        'fit',
        '--config',
        str(CONFIGS / f'torchgeo_{task}_synthetic.yaml'),
        '--trainer.max_steps',
        '2',
        '--trainer.limit_val_batches',
        '1',
        '--trainer.accelerator',
        'cpu',
        '--trainer.enable_progress_bar',
        'false',
        '--trainer.enable_model_summary',
        'false',
        '--trainer.log_every_n_steps',
        '1',
        '--trainer.default_root_dir',
        str(tmp_path),
        '--data.init_args.root',
        str(mini_root),
        '--data.init_args.batch_size',
        '4',
        f'{synthetic}synthesizer.init_args.image_size',
        '32',
        f'{synthetic}synthesizer.init_args.num_inference_steps',
        '2',
    ]
    if task == 'classification':
        layouts = {
            'class_path': 'torchgeo_earthsynth.datasets.EarthSynth180K',
            'init_args': {'root': str(mini_root)},
        }
        args += [f'{synthetic}layouts', json.dumps(layouts)]
    if source == 'bank':
        bank = {
            'class_path': 'torchgeo_earthsynth.bank.SyntheticBank',
            'init_args': {'root': str(bank_root)},
        }
        args += [
            f'{synthetic}source',
            'bank',
            f'{synthetic}bank',
            json.dumps(bank),
            f'{synthetic}unmapped_index',
            '0',
        ]
    main(args)

    assert len(calls) == 2  # one call per training step, none in validation
    aug = calls[-1][0]
    used = 'from_bank' if source == 'bank' else 'generated'
    assert aug.stats['seen'] == 8 and aug.stats[used] > 0
    assert aug.stats['replaced'] == aug.stats[used]
    lut = aug.lut
    inverse = reverse_map(lut, fill=0)
    for _, real, out, plan in calls:
        rows = plan.synthetic
        diff = (out['image'] - real['image']).abs().flatten(1).amax(1)
        assert (diff[rows] > 1).all() and (diff[~rows] == 0).all()
        if task == 'segmentation' and source == 'online':
            assert torch.equal(out['mask'], real['mask'])
            assert torch.equal(lut[out['mask'][rows]], plan.condition[rows])
        elif task == 'segmentation':
            assert torch.equal(out['mask'][rows], inverse[plan.condition[rows]])
            assert torch.equal(out['mask'][~rows], real['mask'][~rows])
        else:
            assert torch.equal(out['label'], real['label'])
            for label, cond in zip(out['label'][rows], plan.condition[rows]):
                assert set(torch.unique(cond).tolist()) == {0, int(lut[label])}
    # the run trained and logged as usual
    metrics = next(tmp_path.rglob('metrics.csv'))
    with metrics.open() as f:
        rows_logged = list(csv.DictReader(f))
    assert any(r.get('train_loss') for r in rows_logged)


class _FlipConditions(torch.nn.Module):
    """A stand-in CF-Comp that mirrors every condition left-right."""

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {**batch, 'mask': batch['mask'].flip(-1)}


def test_cf_comp_never_writes_minus_one(synth: Synthesizer) -> None:
    # Left half nodata (255, no class), right half building (0) over water (1): mirrored,
    # the nodata region's background lands where the labels were.
    mask = torch.full((2, 32, 32), 255, dtype=torch.long)
    mask[:, :16, 16:], mask[:, 16:, 16:] = 0, 1
    batch = {'image': torch.rand(2, 3, 32, 32) * 255, 'mask': mask}
    classes = ('building', 'water')
    common: dict[str, Any] = {'source': 'online', 'p': 1.0, 'synthesizer': synth}
    aug = SyntheticAugmentation(classes, cf_comp=_FlipConditions(), ignore_index=255, **common)
    out, plan = aug.augment(clone(batch))
    assert plan.synthetic.all()
    expected = torch.where(mask == 255, mask.flip(-1), 255)  # moved labels; nodata elsewhere
    assert torch.equal(out['mask'], expected)
    with pytest.raises(ValueError, match='pass ignore_index'):
        SyntheticAugmentation(classes, cf_comp=_FlipConditions(), **common)
    # with a background class, moved background becomes that class
    with_background = ('background', 'building', 'water')
    aug = SyntheticAugmentation(with_background, cf_comp=_FlipConditions(), **common)
    out, _ = aug.augment(
        {'image': batch['image'].clone(), 'mask': torch.where(mask == 255, 0, mask + 1)}
    )
    assert (out['mask'] >= 0).all()
    assert torch.equal(out['mask'][:, :, 16:], torch.zeros(2, 32, 16, dtype=torch.long))


def test_callback_defaults_match_a_torchgeo_datamodule(
    mini_root: Path, bank: SyntheticBank
) -> None:
    datamodule = MiniSegmentationDataModule(root=mini_root, batch_size=8)
    datamodule.setup('fit')
    raw = next(iter(datamodule.train_dataloader()))
    batch = datamodule.aug(clone(raw))  # as on_after_batch_transfer normalises it
    aug = SyntheticAugmentation(SEG_CLASSES, names='LoveDA', source='bank', p=0.5, bank=bank)
    callback = SyntheticAugmentationCallback(aug)  # the README's defaults
    trainer = SimpleNamespace(datamodule=datamodule)
    callback.on_train_batch_start(trainer, None, batch, 0)  # type: ignore[arg-type]
    assert aug.last_plan is not None
    synthetic = aug.last_plan.synthetic
    assert 0 < int(synthetic.sum()) < len(synthetic)
    real_max, fake_max = batch['image'][~synthetic].max(), batch['image'][synthetic].max()
    assert float(real_max) <= 1.0 and 0.3 < float(fake_max) <= 1.0
    assert float(batch['image'][synthetic].min()) >= 0.0
    # exactly the datamodule's own normalisation of the synthetic samples
    twin = SyntheticAugmentation(SEG_CLASSES, names='LoveDA', source='bank', p=0.5, bank=bank)
    expected = datamodule.aug(twin.augment(clone(raw))[0])['image']
    torch.testing.assert_close(batch['image'][synthetic], expected[synthetic])
