# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Detection end to end: exact boxes in the bank, bank augmentation, box layouts, configs."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from torchgeo_earthsynth.bank import SyntheticBank
from torchgeo_earthsynth.boxes import box_masks, check_boxes
from torchgeo_earthsynth.boxes.recompose import BoxRecomposer
from torchgeo_earthsynth.compat import TORCHGEO_VERSION_TUPLE
from torchgeo_earthsynth.datasets import EarthSynth180K
from torchgeo_earthsynth.synthesis import Synthesizer
from torchgeo_earthsynth.transforms import SyntheticAugmentation, rasterize_boxes
from torchgeo_earthsynth.vocabulary import CLASS_IDS, NUM_CLASSES, prompt_from_mask

DATA = Path(__file__).parent / 'data'
CONFIGS = Path(__file__).parents[1] / 'configs'
PLANE, SHIP = CLASS_IDS['plane'], CLASS_IDS['ship']
IDENTITY = torch.arange(NUM_CLASSES)
#: VHR10's label values of plane and ship (its encoding: COCO category ids).
VHR10_PLANE, VHR10_SHIP = 1, 2


@pytest.fixture(scope='module')
def synth() -> Synthesizer:
    return Synthesizer.tiny(0, 32, num_inference_steps=2)


def box_sample(
    synth: Synthesizer, boxes: torch.Tensor, ids: torch.Tensor, key: int
) -> dict[str, Any]:
    """A sample generated from boxes, as `earthsynth synthesize` makes one."""
    mask = rasterize_boxes([boxes], [ids], IDENTITY, (32, 32))
    image = synth.generate(mask, [prompt_from_mask(mask[0])], seeds=[key])[0]
    return {'image': image, 'mask': mask[0], 'bbox_xyxy': boxes, 'label': ids, 'key': key}


def test_bank_keeps_the_exact_boxes_of_touching_objects(tmp_path: Path, synth: Synthesizer) -> None:
    # two planes side by side: their condition is one merged plane region
    boxes = torch.tensor(
        [[2.0, 4.0, 10.5, 12.0], [10.5, 4.0, 19.0, 12.0], [20.0, 20.0, 30.0, 31.0]]
    )
    ids = torch.tensor([PLANE, PLANE, SHIP])
    sample = box_sample(synth, boxes, ids, key=0)
    # boxes cut from the mask would give one plane
    assert (sample['mask'][4:12, 2:19] == PLANE).all()
    bank = SyntheticBank(tmp_path, durable=False)
    assert bank.add([sample]) == 1

    read = bank.dataset()[0]
    assert torch.equal(read['bbox_xyxy'], boxes) and read['bbox_xyxy'].dtype == torch.float32
    assert torch.equal(read['label'], ids) and len(read['label']) == 3
    drawn = bank.sample(1)[0]
    assert torch.equal(drawn['bbox_xyxy'], boxes) and torch.equal(drawn['label'], ids)
    # single-category samples hold the boxes of their class only
    category = EarthSynth180K(tmp_path, mode='category')
    by_class = {int(s['label'][0]): s['bbox_xyxy'] for s in (category[0], category[1])}
    assert torch.equal(by_class[PLANE], boxes[:2]) and torch.equal(by_class[SHIP], boxes[2:])


def test_bank_refuses_a_box_outside_the_image(tmp_path: Path, synth: Synthesizer) -> None:
    sample = box_sample(synth, torch.tensor([[0.0, 0, 8, 8]]), torch.tensor([PLANE]), key=3)
    sample['bbox_xyxy'] = torch.tensor([[0.0, 0.0, 40.0, 8.0]])
    bank = SyntheticBank(tmp_path, durable=False)
    with pytest.raises(ValueError, match=r'sample 3: box 0 .* leaves the 32x32 image'):
        bank.add([sample])
    assert bank.done_keys() == set()  # nothing of the call was recorded


def test_bad_box_records_name_file_and_line(tmp_path: Path, synth: Synthesizer) -> None:
    bank = SyntheticBank(tmp_path, durable=False)
    box = torch.tensor([[1.0, 1, 9, 9]])
    bank.add([box_sample(synth, box, torch.tensor([SHIP]), key=k) for k in range(2)])
    bank.consolidate()
    jsonl = tmp_path / 'train' / 'train.jsonl'
    first, second = (json.loads(line) for line in jsonl.read_text().splitlines())
    del first['bbox_classes']
    jsonl.write_text(json.dumps(first) + '\n' + json.dumps(second) + '\n')
    with pytest.raises(ValueError, match=r'train\.jsonl line 1: .*"bbox_classes" go together'):
        EarthSynth180K(tmp_path)
    lenient = EarthSynth180K(tmp_path, strict=False)
    assert lenient.skipped == {'records with bad boxes': 1} and len(lenient) == 1


@pytest.mark.parametrize('mode', ['replace', 'append'])
def test_detection_from_the_bank_brings_exact_boxes(
    mode: str, tmp_path: Path, synth: Synthesizer
) -> None:
    bank = SyntheticBank(tmp_path, durable=False)
    boxes = torch.tensor([[2.0, 2.0, 10.0, 10.0], [10.0, 2.0, 18.0, 10.0]])
    bank.add([box_sample(synth, boxes, torch.tensor([PLANE, SHIP]), key=0)])
    # a mask-only sample: boxes cut from its mask would be wrong, so it is never drawn
    mask = torch.zeros(32, 32, dtype=torch.long)
    mask[:16] = PLANE
    bank.add([{'image': torch.full((3, 32, 32), 50.0), 'mask': mask}])
    aug = SyntheticAugmentation(
        dataset='VHR10', task='detection', source='bank', bank=bank, p=1.0, mode=mode
    )
    real_boxes = [torch.tensor([[1.0, 1.0, 5.0, 5.0]]), torch.tensor([[3.0, 3.0, 9.0, 9.0]])]
    batch = {
        'image': torch.zeros(2, 3, 64, 64),  # the bank's 32 px samples are resized to 64
        'bbox_xyxy': real_boxes,
        'label': [torch.tensor([VHR10_SHIP]), torch.tensor([VHR10_PLANE])],
        'mask': [torch.ones(1, 64, 64, dtype=torch.uint8) for _ in range(2)],
    }
    out, plan = aug.augment(batch)
    assert aug.stats['from_bank'] == 2 and aug.stats['unavailable'] == 0
    rows = plan.synthetic.nonzero().flatten().tolist()
    assert rows == ([0, 1] if mode == 'replace' else [2, 3])
    for row in rows:
        assert torch.equal(out['bbox_xyxy'][row], boxes * 2)
        assert torch.equal(out['label'][row], torch.tensor([VHR10_PLANE, VHR10_SHIP]))
        assert torch.equal(out['mask'][row], box_masks(boxes * 2, (64, 64)).to(torch.uint8))
    if mode == 'append':  # the real rows are untouched
        assert out['bbox_xyxy'][:2] == real_boxes and out['label'][:2] == batch['label']
    assert batch['bbox_xyxy'] is real_boxes and batch['bbox_xyxy'][0].shape == (1, 4)


def test_box_recomposer_moves_adds_and_swaps_plausibly() -> None:
    layouts = [
        (torch.tensor([[0.0, 0, 4, 4], [10, 10, 30, 30]]), torch.tensor([PLANE, SHIP])),
        (torch.tensor([[5.0, 5, 9, 9]]), torch.tensor([CLASS_IDS['small vehicle']])),
    ]
    recompose = BoxRecomposer(move=1.0, add=1.0, swap=1.0, max_added=2).fit(layouts)
    generator = torch.Generator().manual_seed(0)
    boxes, ids = recompose(*layouts[0], (32, 32), generator)
    assert 2 < len(boxes) <= 4 and len(ids) == len(boxes)
    check_boxes(boxes, ids, (32, 32), 'recomposed')  # inside the image
    sides = (boxes[:, 2:] - boxes[:, :2]).prod(1).sqrt()
    assert torch.allclose(sides[:2], torch.tensor([4.0, 20.0]))  # moved, not resized
    for i in range(len(boxes)):  # moved and added boxes overlap no other
        for j in range(i):
            overlap = torch.minimum(boxes[i, 2:], boxes[j, 2:]) - torch.maximum(
                boxes[i, :2], boxes[j, :2]
            )
            assert (overlap <= 0).any()
    # the 4 px plane can only become the 4 px small vehicle; the 20 px ship has no peer size
    assert ids[:2].tolist() == [CLASS_IDS['small vehicle'], SHIP]


def _vhr10_copy(tmp_path: Path, patch: Callable[[Path], None]) -> Path:
    if TORCHGEO_VERSION_TUPLE < (0, 10):
        pytest.importorskip('pycocotools')  # TorchGeo 0.8 reads the annotations with it
    root = tmp_path / 'vhr10'
    shutil.copytree(DATA / 'vhr10', root, ignore=shutil.ignore_patterns('*.py'))
    patch(root)
    return root


def test_synthesize_fills_a_detection_bank_from_layouts(
    tmp_path: Path, vhr10_checksums: Callable[[Path], None]
) -> None:
    from torchgeo_earthsynth.cli import synthesize

    root = _vhr10_copy(tmp_path, vhr10_checksums)
    bank_root = tmp_path / 'bank'
    config = {
        'model': {
            'class_path': 'torchgeo_earthsynth.lightning_modules.EarthSynthControlNet',
            'init_args': {'preset': 'tiny', 'image_size': 32, 'predict_inference_steps': 2},
        },
        'data': {
            'class_path': 'torchgeo_earthsynth.datamodules.BoxLayoutDataModule',
            'init_args': {
                'dataset': {
                    'class_path': 'torchgeo.datasets.VHR10',
                    'init_args': {'root': str(root)},
                },
                'size': 32,
                'repeats': 2,
                'recompose': {'class_path': 'torchgeo_earthsynth.boxes.BoxRecomposer'},
                'batch_size': 8,
                'limit': 12,
            },
        },
        'bank': {'root': str(bank_root)},
        'trainer': {'accelerator': 'cpu', 'devices': 1},
    }
    path = tmp_path / 'synthesize.yaml'
    path.write_text(json.dumps(config))
    summary = synthesize(['--config', str(path), '--allow_untrained'])
    assert summary is not None and summary['written'] == 12

    from torchgeo.datasets import VHR10

    from torchgeo_earthsynth.datamodules import BoxLayoutDataset

    layouts = BoxLayoutDataset(VHR10(str(root)), size=32)
    bank = SyntheticBank(bank_root)
    dataset = bank.dataset()
    by_key = dict(zip(bank.keys(), range(len(bank))))
    for key in range(10):  # the real layouts: VHR10's boxes, exactly
        boxes, ids = layouts.layout(key)
        sample = dataset[by_key[key]]
        assert torch.equal(sample['bbox_xyxy'], boxes) and torch.equal(sample['label'], ids)
    recomposed = dataset[by_key[10]]
    assert not torch.equal(recomposed['bbox_xyxy'], layouts.layout(0)[0])
    # resumable: a rerun with more keys makes only the new ones
    config['data']['init_args']['limit'] = 14
    path.write_text(json.dumps(config))
    again = synthesize(['--config', str(path), '--allow_untrained'])
    assert again is not None and again['written'] == 2 and again['skipped_done'] == 12


def test_ddp_synthesis_of_a_detection_bank(
    tmp_path: Path,
    vhr10_checksums: Callable[[Path], None],
    ddp_synthesize: Callable[..., Any],
) -> None:
    from torchgeo.datasets import VHR10

    from torchgeo_earthsynth.datamodules import BoxLayoutDataModule

    root = _vhr10_copy(tmp_path, vhr10_checksums)
    bank_root = tmp_path / 'bank'
    # the ranks are fresh processes, without the patched checksums: they check none
    dataset = {
        'class_path': 'torchgeo.datasets.VHR10',
        'init_args': {'root': str(root), 'checksum': False},
    }
    data = {  # 10 real layouts, then recompositions (keys 10, 11)
        'class_path': 'torchgeo_earthsynth.datamodules.BoxLayoutDataModule',
        'init_args': {
            'dataset': dataset,
            'size': 32,
            'repeats': 2,
            'recompose': {'class_path': 'torchgeo_earthsynth.boxes.BoxRecomposer'},
        },
    }
    summaries, keys = ddp_synthesize(bank_root, '6,12', SYNTH_DATA=json.dumps(data))
    assert [(s['written'], s['skipped_done']) for s in summaries] == [(6, 0), (6, 6)]
    assert [len(s['ranks']) for s in summaries] == [2, 2]
    assert sorted(keys) == list(range(12))  # each layout once across the ranks

    expected = BoxLayoutDataModule(VHR10(str(root)), size=32, repeats=2, recompose=BoxRecomposer())
    expected.setup('predict')  # fits the recomposer on the layouts, as each rank did
    bank = SyntheticBank(bank_root)
    stored = bank.dataset()
    for row, key in enumerate(bank.keys()):
        sample, layout = stored[row], expected.layouts[int(key)]
        assert torch.equal(sample['bbox_xyxy'], layout['bbox_xyxy'])
        assert torch.equal(sample['label'], layout['label'])
        assert torch.equal(sample['mask'], layout['mask'])  # the condition it was made from
    recomposed = stored[bank.keys().index(10)]['bbox_xyxy']
    assert not torch.equal(recomposed, expected.layouts[0]['bbox_xyxy'])


def test_torchgeo_cli_trains_a_detector_with_bank_samples(
    tmp_path: Path,
    synth: Synthesizer,
    vhr10_checksums: Callable[[Path], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from torchgeo.main import main

    root = _vhr10_copy(tmp_path, vhr10_checksums)
    bank_root = tmp_path / 'bank'
    bank = SyntheticBank(bank_root, durable=False)
    boxes = torch.tensor([[2.0, 2.0, 14.0, 14.0], [14.0, 2.0, 26.0, 14.0]])
    bank.add([box_sample(synth, boxes, torch.tensor([PLANE, SHIP]), key=k) for k in range(2)])

    calls: list[tuple[SyntheticAugmentation, Any]] = []
    augment = SyntheticAugmentation.augment

    def spy(self: SyntheticAugmentation, batch: dict[str, Any]) -> Any:
        out, plan = augment(self, batch)
        calls.append((self, [b.clone() for b in out['bbox_xyxy']], plan))
        return out, plan

    monkeypatch.setattr(SyntheticAugmentation, 'augment', spy)
    monkeypatch.setattr(sys, 'argv', ['torchgeo'])
    synthetic = '--data.init_args.synthetic.init_args.'
    bank_arg = {
        'class_path': 'torchgeo_earthsynth.bank.SyntheticBank',
        'init_args': {'root': str(bank_root)},
    }
    args = ['fit', '--config', str(CONFIGS / 'torchgeo_detection_synthetic.yaml')]
    args += ['--trainer.max_steps', '2', '--trainer.limit_val_batches', '1']
    args += ['--trainer.accelerator', 'cpu', '--trainer.enable_progress_bar', 'false']
    args += ['--trainer.enable_model_summary', 'false', '--trainer.logger', 'false']
    args += ['--trainer.enable_checkpointing', 'false']
    args += ['--trainer.default_root_dir', str(tmp_path)]
    args += ['--data.init_args.root', str(root), '--data.init_args.batch_size', '2']
    args += ['--data.init_args.patch_size', '32', f'{synthetic}bank', json.dumps(bank_arg)]
    args += [f'{synthetic}p', '1.0']
    main(args)

    assert len(calls) == 2  # one per training step
    aug = calls[-1][0]
    assert aug.stats['seen'] == 4 and aug.stats['from_bank'] == 4 == aug.stats['replaced']
    for _, out_boxes, plan in calls:
        assert plan.synthetic.all()
        for row in range(len(out_boxes)):
            assert torch.equal(out_boxes[row], boxes)


class _Brightness(torch.nn.Module):
    """A classifier of crops: bright means plane, dark means ship."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = x.mean((1, 2, 3)) - 0.5  # normalised by 255: 0..1
        return torch.stack([10 * bright, -10 * bright], 1)


def test_rfilter_objects_rule_checks_every_box() -> None:
    from torchgeo_earthsynth.rfilter import RFilter

    rfilter = RFilter(
        clip_model=None,
        layout=False,
        sanity=False,
        novelty=False,
        objects=True,
        object_classifier=_Brightness(),
        object_label_map=[PLANE, SHIP],
    )
    images = torch.zeros(3, 3, 32, 32)
    images[:, :, 4:16, 4:16] = 255.0  # a bright object in the first box of every image
    box = torch.tensor([[4.0, 4.0, 16.0, 16.0]])
    dark = torch.tensor([[18.0, 18.0, 30.0, 30.0]])
    harbor = CLASS_IDS['harbor']  # a class the classifier does not know: not judged
    batch = {
        'image': images,
        'bbox_xyxy': [torch.cat([box, dark]), torch.cat([box, dark]), torch.zeros(0, 4)],
        'label': [torch.tensor([PLANE, SHIP]), torch.tensor([PLANE, PLANE]), torch.zeros(0)],
    }
    batch['label'][2] = batch['label'][2].long()
    result = rfilter(batch)
    assert result.keep.tolist() == [True, False, True]
    assert result.reasons[1].startswith('objects: box 1 (plane) scores 0.00 < 0.50')
    assert rfilter.summary().rows[2]['dropped'] == 1
    batch['label'][1] = torch.tensor([PLANE, harbor])
    assert rfilter(batch).keep.tolist() == [True, True, True]
    with pytest.raises(ValueError, match="needs the boxes: batch keys 'bbox_xyxy'"):
        rfilter({'image': images})


def test_online_detection_banks_its_boxes(tmp_path: Path, synth: Synthesizer) -> None:
    bank = SyntheticBank(tmp_path, durable=False)
    aug = SyntheticAugmentation(
        dataset='VHR10',
        task='detection',
        source='online',
        synthesizer=synth,
        bank=bank,
        add_to_bank=True,
        p=1.0,
        rfilter=None,
    )
    boxes = [torch.tensor([[2.0, 2.0, 12.0, 12.0], [12.0, 2.0, 33.0, 12.0]])]  # past the edge
    batch = {
        'image': torch.zeros(1, 3, 32, 32),
        'bbox_xyxy': boxes,
        'label': [torch.tensor([VHR10_PLANE, VHR10_SHIP])],
    }
    aug.augment(batch)
    assert aug.stats['added_to_bank'] == 1
    stored = bank.dataset()[0]
    assert torch.equal(stored['bbox_xyxy'], torch.tensor([[2.0, 2, 12, 12], [12, 2, 32, 12]]))
    assert torch.equal(stored['label'], torch.tensor([PLANE, SHIP]))


def test_evaluate_reports_map_per_arm(
    tmp_path: Path, synth: Synthesizer, vhr10_checksums: Callable[[Path], None]
) -> None:
    from torchgeo_earthsynth.evaluation import run_experiment

    root = _vhr10_copy(tmp_path, vhr10_checksums)
    bank = SyntheticBank(tmp_path / 'bank', durable=False)
    boxes = torch.tensor([[2.0, 2.0, 14.0, 14.0], [14.0, 2.0, 26.0, 14.0]])
    bank.add([box_sample(synth, boxes, torch.tensor([PLANE, SHIP]), key=k) for k in range(2)])
    output = tmp_path / 'report'
    result = run_experiment(
        {
            'task': 'detection',
            'data': {'root': str(root), 'batch_size': 2, 'patch_size': 32},
            'bank': str(tmp_path / 'bank'),
            'synthetic': {'p': 1.0},
            'arms': ['real', 'real+synthetic', 'synthetic-only'],
            'seeds': [0],
            'trainer': {'accelerator': 'cpu', 'max_steps': 2, 'limit_val_batches': 1},
            'output': str(output),
            'progress': False,
        }
    )
    assert result.metric == 'test_map'
    assert list(result.summary) == ['real', 'real+synthetic', 'synthetic-only']
    by_arm = {run.arm: run for run in result.runs}
    for run in by_arm.values():
        assert 0.0 <= run.value <= 1.0 and run.value == run.metrics['test_map']
    stats = by_arm['real+synthetic'].synthetic_stats
    assert stats is not None and stats['from_bank'] == 4  # 2 steps of 2 rows, p = 1
    assert by_arm['real'].synthetic_stats is None
    assert by_arm['synthetic-only'].train_samples == 2  # the bank's samples, with their boxes
    assert (output / 'summary.csv').is_file() and 'test_map' in result.format_table()


def test_synthetic_train_set_for_detection(tmp_path: Path, synth: Synthesizer) -> None:
    from torchgeo_earthsynth.encodings.registry import encoding_for
    from torchgeo_earthsynth.evaluation import SyntheticTrainSet

    bank = SyntheticBank(tmp_path, durable=False)
    boxes = torch.tensor([[2.0, 2.0, 10.0, 10.0], [10.0, 2.0, 18.0, 10.0]])
    bank.add([box_sample(synth, boxes, torch.tensor([PLANE, SHIP]), key=0)])
    # a class VHR10 has not, and a mask-only sample: neither can be a VHR10 sample
    building = torch.tensor([[4.0, 4.0, 8.0, 8.0]])
    bank.add([box_sample(synth, building, torch.tensor([CLASS_IDS['building']]), key=1)])
    mask = torch.zeros(32, 32, dtype=torch.long)
    mask[:16] = PLANE
    bank.add([{'image': torch.full((3, 32, 32), 50.0), 'mask': mask, 'key': 2}])
    train = SyntheticTrainSet(tmp_path, 'detection', encoding_for('VHR10').lut(), size=(64, 64))
    assert len(train) == 1
    sample = train[0]
    assert sample['image'].shape == (3, 64, 64)
    assert torch.equal(sample['bbox_xyxy'], boxes * 2)
    assert torch.equal(sample['label'], torch.tensor([VHR10_PLANE, VHR10_SHIP]))
    assert torch.equal(sample['mask'], box_masks(boxes * 2, (64, 64)).to(torch.uint8))

    only_masks = tmp_path / 'masks'
    SyntheticBank(only_masks, durable=False).add([{'image': torch.zeros(3, 32, 32), 'mask': mask}])
    with pytest.raises(ValueError, match=r'no sample was generated from boxes .* box layouts'):
        SyntheticTrainSet(only_masks, 'detection', encoding_for('VHR10').lut())
