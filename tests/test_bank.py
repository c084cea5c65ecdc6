# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from PIL import Image

from torchgeo_earthsynth.bank import SyntheticBank
from torchgeo_earthsynth.cli import synthesize as main
from torchgeo_earthsynth.datamodules import MaskPromptDataModule, MaskPromptDataset
from torchgeo_earthsynth.datasets import EarthSynth180K, layout
from torchgeo_earthsynth.lightning_modules import BankWriter
from torchgeo_earthsynth.rfilter import KeyedFilter
from torchgeo_earthsynth.synthesis import Synthesizer
from torchgeo_earthsynth.vocabulary import multi_hot, prompt_from_mask

REPO = Path(__file__).resolve().parents[1]
SIZE = 16


def make_sample(key: int) -> dict[str, Any]:
    """A sample whose pixels and classes are a function of its key."""
    ramp = (torch.arange(SIZE * SIZE).view(SIZE, SIZE) + 7 * key) % 256
    image = torch.stack([ramp, 255 - ramp, torch.full_like(ramp, key % 256)]).float()
    mask = torch.zeros(SIZE, SIZE, dtype=torch.long)
    mask[:8, :8] = key % 5 + 1
    if key % 2 == 0:
        mask[12:] = 6  # water
    return {'image': image, 'mask': mask, 'key': key, 'seed': 100 + key}


def assert_matches(sample: dict[str, Any], key: int) -> None:
    expected = make_sample(key)
    assert torch.equal(sample['image'], expected['image'])
    assert torch.equal(sample['mask'], expected['mask'])
    assert sample['prompt'] == prompt_from_mask(expected['mask'])


def fork_context() -> Any:
    if 'fork' not in mp.get_all_start_methods():
        pytest.skip('needs the fork start method')
    return mp.get_context('fork')


def test_add_and_read_back(tmp_path: Path) -> None:
    bank = SyntheticBank(tmp_path, categories=True)
    assert bank.add([make_sample(k) for k in range(4)]) == 4
    assert len(bank) == 4 and bank.keys() == [0, 1, 2, 3]
    dataset = EarthSynth180K(tmp_path, split='train')
    assert len(dataset) == 4
    for index, key in enumerate(bank.keys()):
        assert_matches(dataset[index], key)
    records = [json.loads(line) for line in bank.jsonl.read_text().splitlines()]
    assert records[0]['key'] == 0 and records[0]['seed'] == 100
    assert records[0]['file_name'].startswith('images/SYN_0_')
    # category augmentation: one single-category sample per class of each mask
    categories = EarthSynth180K(tmp_path, split='train', mode='category')
    assert len(categories) == sum(len(torch.unique(make_sample(k)['mask'])) - 1 for k in range(4))
    assert all(len(torch.unique(categories[i]['mask'])) <= 2 for i in range(len(categories)))


def test_add_rejects_bad_samples(tmp_path: Path) -> None:
    bank = SyntheticBank(tmp_path)
    bad = make_sample(1)
    bad['image'][0, 0, 0] = float('nan')
    with pytest.raises(ValueError, match='sample 1: image has NaN'):
        bank.add([make_sample(0), bad])  # checked before anything is written
    assert not list(tmp_path.rglob('*.png'))
    with pytest.raises(ValueError, match=r'expected image \[3, H, W\] and mask \[H, W\]'):
        bank.add([make_sample(2) | {'mask': torch.zeros(8, 8)}])
    with pytest.raises(ValueError, match=r'mask ids must lie in \[0, 66\], got \[70, 70\]'):
        bank.add([make_sample(3) | {'mask': torch.full((SIZE, SIZE), 70)}])
    with pytest.raises(ValueError, match='key must be an int or a str'):
        bank.add([make_sample(4) | {'key': 1.5}])
    with pytest.raises(ValueError, match='split must be one of'):
        SyntheticBank(tmp_path, split='test')  # type: ignore[arg-type]
    assert bank.done_keys() == set() and len(bank) == 0


def test_keys_default_to_content_hash(tmp_path: Path) -> None:
    bank = SyntheticBank(tmp_path)
    sample = {k: v for k, v in make_sample(3).items() if k not in ('key', 'seed')}
    bank.add([sample, sample])  # the same content twice: one sample
    (key,) = bank.done_keys()
    assert isinstance(key, str) and key.startswith('sha1-')
    assert len(bank.refresh()) == 1


def _write_keys(root: str, keys: list[int]) -> None:
    bank = SyntheticBank(root)  # default writer id: this process's own part
    for start in range(0, len(keys), 2):
        bank.add([make_sample(k) for k in keys[start : start + 2]])


def test_concurrent_writers(tmp_path: Path) -> None:
    ctx = fork_context()
    writers = [
        ctx.Process(target=_write_keys, args=(str(tmp_path), list(range(i, 120, 3))))
        for i in range(3)
    ]
    for process in writers:
        process.start()
    reader = SyntheticBank(tmp_path)
    snapshots = 0
    while any(p.is_alive() for p in writers) or snapshots == 0:
        # consolidating and reading while writers append: every listed sample loads
        if reader.consolidate() == 0:  # no writer has finished a sample yet
            continue
        dataset = EarthSynth180K(tmp_path, split='train')
        for index in range(len(dataset)):
            assert dataset[index]['image'].shape == (3, SIZE, SIZE)
        snapshots += 1
    for process in writers:
        process.join(30)
        assert process.exitcode == 0
    assert len(list(reader.parts_dir.glob('*.jsonl'))) == 3
    reader.refresh()
    assert len(reader) == 120 and sorted(reader.keys()) == list(range(120))  # type: ignore[type-var]
    assert reader.done_keys() == set(range(120))
    dataset = reader.dataset()
    for index, key in enumerate(reader.keys()):
        assert_matches(dataset[index], int(key))  # type: ignore[arg-type]
    assert not reader.problems


def _write_forever(root: str) -> None:
    bank = SyntheticBank(root, writer_id='victim')
    key = 1000
    while True:
        bank.add([make_sample(key)])
        key += 1


def test_killed_writer_leaves_no_broken_sample(tmp_path: Path) -> None:
    ctx = fork_context()
    victim = ctx.Process(target=_write_forever, args=(str(tmp_path),))
    victim.start()
    part = tmp_path / 'train' / 'parts' / 'victim.jsonl'
    deadline = time.monotonic() + 60
    while (not part.exists() or part.read_text().count('\n') < 3) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(10)
    assert victim.exitcode == -signal.SIGKILL
    complete = part.read_text().count('\n')
    assert complete >= 3
    # what a writer killed at other moments leaves: a temporary PNG, PNGs without a
    # record, and a torn last line
    split = tmp_path / 'train'
    (split / 'images' / '.SYN_x.abc.png.tmp').write_bytes(b'\x89PNG half')
    layout.write_sample(
        split,
        'SYN_orphan',
        np.zeros((SIZE, SIZE, 3), np.uint8),
        np.ones((SIZE, SIZE), np.uint8),
        categories=False,
    )
    with part.open('a') as f:
        f.write('{"records": [{"file_name": "images/SYN_torn')
    bank = SyntheticBank(tmp_path).refresh()
    assert len(bank) == complete
    dataset = EarthSynth180K(tmp_path, split='train')
    assert len(dataset) == complete
    for index, key in enumerate(bank.keys()):
        assert_matches(dataset[index], int(key))  # type: ignore[arg-type]
    assert 'SYN_orphan' not in bank.jsonl.read_text()
    # the same writer resumes: its torn line is closed off, the new line reads back
    SyntheticBank(tmp_path, writer_id='victim').add([make_sample(5000)])
    bank.refresh()
    assert len(bank) == complete + 1 and 5000 in bank.keys()
    assert bank.problems['unreadable lines'] == 1
    removed = bank.prune()
    # the planted temporary, plus one of the victim's own if SIGKILL caught it mid-write
    assert removed['temporary'] >= 1 and removed['orphans'] >= 2
    assert not (split / 'images' / '.SYN_x.abc.png.tmp').exists()
    assert not (split / 'images' / 'SYN_orphan.png').exists()
    assert not list((split / 'images').glob('.*.tmp'))
    dataset = bank.refresh().dataset()
    assert len(dataset) == complete + 1
    assert all(dataset[i]['image'].shape == (3, SIZE, SIZE) for i in range(len(dataset)))


def test_resume_and_mask_prompt_dataset(tmp_path: Path, mini_root: Path) -> None:
    bank = SyntheticBank(tmp_path / 'bank')
    bank.add([make_sample(k) for k in (0, 2, 3)])
    assert bank.done_keys() == {0, 2, 3}
    source = EarthSynth180K(mini_root, split='val')
    todo = MaskPromptDataset(source, seed=10, skip=bank.done_keys())
    assert todo.keys == [1, 4, 5, 6, 7] and todo.skipped == 3 and len(todo) == 5
    item = todo[1]
    assert item['key'] == 4 and item['index'] == 4 and item['seed'] == 14
    assert torch.equal(item['mask'], source[4]['mask']) and item['prompt'] == source[4]['prompt']
    repeated = MaskPromptDataset(source, seed=0, repeats=2, skip={0}, limit=12)
    assert len(repeated) == 11 and repeated[9]['index'] == 2 and repeated[9]['key'] == 10
    with pytest.raises(ValueError, match='repeats must be >= 1'):
        MaskPromptDataset(source, repeats=0)
    datamodule = MaskPromptDataModule(
        str(mini_root), batch_size=4, bank_root=str(tmp_path / 'bank')
    )
    datamodule.setup('predict')
    batch = next(iter(datamodule.predict_dataloader()))
    assert batch['key'].tolist() == [1, 4, 5, 6] and batch['mask'].shape == (4, 32, 32)


def test_sample(tmp_path: Path) -> None:
    bank = SyntheticBank(tmp_path)
    with pytest.raises(ValueError, match='holds no sample'):
        bank.sample(1)
    assert len(bank) == 0
    bank.add([make_sample(k) for k in range(10)])
    assert len(bank) == 0  # cached until refresh()
    bank.refresh()
    assert len(bank) == 10
    draw = bank.sample(4, generator=torch.Generator().manual_seed(0))
    again = bank.sample(4, generator=torch.Generator().manual_seed(0))
    assert [d['prompt'] for d in draw] == [a['prompt'] for a in again]
    for sample in draw:
        assert sample['source'] == 'synthetic' and sample['image'].dtype == torch.float32
        assert torch.equal(sample['categories'], multi_hot(sample['mask']))
    # water (6) is in even keys only; class 3 in keys 2 and 7
    water = bank.sample(20, classes=[6])
    assert len(water) == 5 and all((s['mask'] == 6).any() for s in water)
    assert len({s['image'][2, 0, 0].item() for s in water}) == 5  # distinct samples
    three = bank.sample(5, classes=[3], replacement=True)
    assert len(three) == 5 and all((s['mask'] == 3).any() for s in three)
    either = bank.sample(10, classes=[3, 4])
    assert len(either) == 4
    with pytest.raises(ValueError, match=r'holds no sample with any of the classes \[40\]'):
        bank.sample(1, classes=[40])
    with pytest.raises(ValueError, match=r'class ids \[99\] must lie in'):
        bank.sample(1, classes=[99])
    with pytest.raises(ValueError, match='n must be >= 0'):
        bank.sample(-1)


class Painter(pl.LightningModule):
    """Predicts images made from the mask and seed (no diffusion: fast)."""

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        masks = batch['mask']
        shade = 30 * (batch['seed'] % 7).view(-1, 1, 1, 1).float()
        images = 10 * (masks[:, None] > 0).float().expand(-1, 3, -1, -1) + shade
        images = torch.where(batch['key'].view(-1, 1, 1, 1) == 5, float('nan'), images)
        return {**batch, 'image': images}


def test_bank_writer_filter_and_summary(tmp_path: Path, mini_root: Path) -> None:
    def drop_odd(images: torch.Tensor, masks: torch.Tensor, prompts: list[str]) -> Any:
        keep = images[:, 0, 0, 0] >= 0  # NaN -> False too
        keep = keep & (images.new_tensor([i % 2 == 0 for i in range(len(images))]) > 0)
        reasons = ['' if k else 'alignment 3.0 < 20.0; sanity: flat' for k in keep.tolist()]
        return SimpleNamespace(keep=keep, reasons=reasons)

    writer = BankWriter(str(tmp_path), rfilter=KeyedFilter(drop_odd))
    datamodule = MaskPromptDataModule(str(mini_root), batch_size=4, bank_root=str(tmp_path))
    trainer = pl.Trainer(
        accelerator='cpu', devices=1, callbacks=[writer], logger=False, enable_progress_bar=False
    )
    trainer.predict(Painter(), datamodule=datamodule, return_predictions=False)
    summary = json.loads((tmp_path / 'train' / 'summary.json').read_text())
    assert summary == writer.summary
    assert (summary['predicted'], summary['written'], summary['dropped']) == (8, 4, 4)
    assert summary['dropped_by'] == {'alignment': 4, 'sanity': 4}
    assert summary['bank_size'] == 4 and summary['skipped_done'] == 0
    bank = SyntheticBank(tmp_path)
    assert bank.done_keys() == {0, 2, 4, 6}
    # without a filter only the NaN image (key 5) is dropped; done keys are skipped
    writer = BankWriter(str(tmp_path))
    trainer = pl.Trainer(
        accelerator='cpu', devices=1, callbacks=[writer], logger=False, enable_progress_bar=False
    )
    trainer.predict(Painter(), datamodule=datamodule, return_predictions=False)
    assert writer.summary is not None
    assert writer.summary['skipped_done'] == 4 and writer.summary['written'] == 3
    assert writer.summary['dropped_by'] == {'non-finite': 1}
    assert bank.refresh().done_keys() == {0, 1, 2, 3, 4, 6, 7}
    dataset = bank.dataset()
    stored = dataset[bank.keys().index(3)]
    mask = EarthSynth180K(mini_root, split='val')[3]['mask']
    assert torch.equal(stored['mask'], mask)
    assert torch.equal(stored['image'], 10 * (mask > 0).float().expand(3, -1, -1) + 90)


def test_bank_writer_rejects_bad_filter_output(tmp_path: Path, mini_root: Path) -> None:
    writer = BankWriter(str(tmp_path), rfilter=lambda batch: torch.ones(3, dtype=torch.bool))
    trainer = pl.Trainer(
        accelerator='cpu', devices=1, callbacks=[writer], logger=False, enable_progress_bar=False
    )
    datamodule = MaskPromptDataModule(str(mini_root), batch_size=4)
    with pytest.raises(ValueError, match=r'keep of shape \(3,\); expected a bool tensor \[4\]'):
        trainer.predict(Painter(), datamodule=datamodule, return_predictions=False)


def synthesize_args(mini_root: Path, bank: Path, limit: int) -> list[str]:
    return [
        '--config',
        str(REPO / 'configs' / 'synthesize_mini.yaml'),
        '--data.root',
        str(mini_root),
        '--bank.root',
        str(bank),
        '--model.init_args.image_size',
        '32',
        '--model.init_args.predict_inference_steps',
        '2',
        '--data.batch_size',
        '2',
        '--data.limit',
        str(limit),
        '--trainer.enable_progress_bar',
        'false',
        '--allow-untrained',
    ]


def test_cli_config_and_resume(tmp_path: Path, mini_root: Path) -> None:
    summary = main(synthesize_args(mini_root, tmp_path, 3))
    assert summary is not None and (summary['written'], summary['bank_size']) == (3, 3)
    summary = main(synthesize_args(mini_root, tmp_path, 5))
    assert summary is not None
    assert (summary['written'], summary['skipped_done'], summary['bank_size']) == (2, 3, 5)
    bank = SyntheticBank(tmp_path)
    assert bank.done_keys() == set(range(5)) and len(bank) == 5
    records = [json.loads(line) for line in bank.jsonl.read_text().splitlines()]
    assert [r['seed'] for r in records] == [r['key'] for r in records]  # seed 0 + key


def test_cli_with_diffusers_export(tmp_path: Path, mini_root: Path) -> None:
    from torchgeo_earthsynth.lightning_modules import EarthSynthControlNet

    export = EarthSynthControlNet(preset='tiny', image_size=32).save_pretrained(tmp_path / 'x')
    summary = main(
        [
            '--model',
            'torchgeo_earthsynth.lightning_modules.SynthesizerModule',
            '--model.pretrained',
            str(export),
            '--model.num_inference_steps',
            '2',
            '--model.guidance_scale',
            '3.0',
            '--data.root',
            str(mini_root),
            '--data.limit',
            '3',
            '--data.seed',
            '50',
            '--bank.root',
            str(tmp_path / 'bank'),
            '--trainer.accelerator',
            'cpu',
            '--trainer.enable_progress_bar',
            'false',
        ]
    )
    assert summary is not None and summary['written'] == 3
    synth = Synthesizer.from_pretrained(export, num_inference_steps=2, guidance_scale=3.0)
    source = EarthSynth180K(mini_root, split='val')
    masks = torch.stack([source[i]['mask'] for i in range(3)])
    expected = synth.generate(masks, [source[i]['prompt'] for i in range(3)], seeds=[50, 51, 52])
    bank = SyntheticBank(tmp_path / 'bank')
    dataset = bank.dataset()
    for row, key in enumerate(bank.keys()):
        stored = dataset[row]
        assert torch.equal(stored['mask'], masks[int(key)])  # type: ignore[arg-type]
        assert (stored['image'] - expected[int(key)]).abs().max() <= 1  # type: ignore[arg-type]


def test_ddp_synthesis(tmp_path: Path, mini_root: Path, ddp_synthesize: Callable[..., Any]) -> None:
    summaries, keys = ddp_synthesize(tmp_path, '5,8,8', SYNTH_CORPUS=str(mini_root))
    assert [s['written'] for s in summaries] == [5, 3, 0]
    assert [s['skipped_done'] for s in summaries] == [0, 5, 8]
    assert [len(s['ranks']) for s in summaries] == [2, 2, 2]
    parts = sorted(p.name for p in (tmp_path / 'train' / 'parts').glob('*.jsonl'))
    assert len(parts) == 2 and parts[0].startswith('rank0-') and parts[1].startswith('rank1-')
    assert sorted(keys) == list(range(8))  # each mask once, no duplicates across ranks
    bank = SyntheticBank(tmp_path)
    assert len(bank) == 8 and len(EarthSynth180K(tmp_path, split='train')) == 8
    images = sorted((tmp_path / 'train' / 'images').glob('*.png'))
    assert len(images) == 8
    assert Image.open(images[0]).size == (32, 32)


def test_relative_bank_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    bank = SyntheticBank('rel/bank')
    sample = {
        'image': torch.full((3, 8, 8), 50.0),
        'mask': torch.full((8, 8), 6),
        'prompt': 'A satellite image of water',
        'seed': 3,
    }
    assert bank.add([sample]) == 1
    bank.consolidate()
    assert len(bank.refresh()) == 1
    assert bank.sample(1)[0]['mask'].eq(6).all()


def test_synthesizer_module_seeds_unique_across_batches_and_ranks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchgeo_earthsynth.lightning_modules import EarthSynthControlNet, SynthesizerModule

    export = EarthSynthControlNet(preset='tiny', image_size=32).save_pretrained(tmp_path / 'x')
    module = SynthesizerModule(str(export), num_inference_steps=1, guidance_scale=1.0)
    masks = torch.zeros(3, 32, 32, dtype=torch.long)

    def seeds_of(size: int, batch_idx: int) -> list[int]:
        batch = {'mask': masks[:size], 'prompt': ['forest'] * size}
        return [int(s) for s in module.predict_step(batch, batch_idx)['seed']]

    full, short = seeds_of(3, 0), seeds_of(1, 1)  # a short last batch
    rank0 = full + short
    assert len(set(rank0)) == 4
    monkeypatch.setattr(torch.distributed, 'is_initialized', lambda: True)
    monkeypatch.setattr(torch.distributed, 'get_rank', lambda: 1)
    rank1 = seeds_of(3, 0) + seeds_of(1, 1)
    assert not set(rank0) & set(rank1)
    assert seeds_of(3, 0) == rank1[:3]  # reproducible per (seed, rank, batch)
    given = {'mask': masks[:2], 'prompt': ['forest'] * 2, 'seed': torch.tensor([7, 9])}
    assert module.predict_step(given, 5)['seed'].tolist() == [7, 9]


# ---------------------------------------------------------------------- faults (issue 14)
def truncate_sample(bank: SyntheticBank, key: int) -> Path:
    """Cut the image PNG of stored sample ``key`` in half; returns its path."""
    records = [json.loads(line) for line in bank.jsonl.read_text().splitlines()]
    record = next(r for r in records if r.get('key') == key)
    path = bank.split_dir / record['file_name']
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_truncated_png_is_skipped_counted_and_pruned(tmp_path: Path) -> None:
    from torchgeo_earthsynth.transforms import SyntheticAugmentation

    bank = SyntheticBank(tmp_path)
    bank.add([make_sample(k) for k in range(6)])
    bank.refresh()
    path = truncate_sample(bank, 2)
    draws = bank.sample(6, generator=torch.Generator().manual_seed(0))
    assert sorted(int(d['image'][2, 0, 0]) for d in draws) == [0, 1, 3, 4, 5]
    assert bank.problems['unreadable samples'] == 1
    repeated = bank.sample(30, replacement=True, generator=torch.Generator().manual_seed(1))
    assert len(repeated) == 30 and all(int(d['image'][2, 0, 0]) != 2 for d in repeated)
    assert bank.problems['unreadable samples'] == 1  # counted once

    # the augmentation draws its pool from the bank: it trains on
    fresh = SyntheticBank(tmp_path)
    aug = SyntheticAugmentation(('background', 'water'), source='bank', bank=fresh, p=1.0)
    batch = {
        'image': torch.zeros(2, 3, SIZE, SIZE),
        'mask': torch.zeros(2, SIZE, SIZE, dtype=torch.long),
    }
    assert aug(batch)['image'].shape == (2, 3, SIZE, SIZE)
    assert fresh.problems['unreadable samples'] == 1

    counts = bank.prune()
    assert counts['unreadable'] == 1 and not path.exists()
    assert bank.done_keys() == {0, 1, 3, 4, 5}  # a rerun makes key 2 again
    bank.refresh()
    assert len(bank) == 5 and sorted(bank.keys()) == [0, 1, 3, 4, 5]  # type: ignore[type-var]
    assert not bank.problems


def test_bad_part_line_does_not_fail_refresh(tmp_path: Path) -> None:
    bank = SyntheticBank(tmp_path / 'bank', writer_id='good')
    bank.add([make_sample(k) for k in range(3)])
    outside = tmp_path / 'x.png'  # exists, two folders above the split
    outside.write_bytes((bank.split_dir / 'images').glob('*.png').__next__().read_bytes())
    record = {'file_name': '../../x.png', 'mask_name': '../../x.png', 'text': 'x', 'key': 99}
    with (bank.parts_dir / 'evil.jsonl').open('w') as f:
        f.write(json.dumps({'records': [record]}) + '\n')
    bank.refresh()
    assert len(bank) == 3 and 99 not in bank.keys()
    assert bank.problems['records with paths outside the bank'] == 1
    assert len(bank.sample(3)) == 3


def _claim_and_write(root: str, keys: list[int], queue: Any) -> None:
    bank = SyntheticBank(root)
    held = []
    for key in keys:  # one at a time, as a writer working through its queue would
        if bank.claim([key]):
            bank.add([make_sample(key)])
            held.append(key)
    queue.put(held)


def test_concurrent_writers_split_the_work(tmp_path: Path) -> None:
    ctx = fork_context()
    queue = ctx.Queue()
    keys = list(range(40))
    writers = [
        ctx.Process(target=_claim_and_write, args=(str(tmp_path), keys, queue)) for _ in range(2)
    ]
    for process in writers:
        process.start()
    made = [queue.get(timeout=60) for _ in writers]
    for process in writers:
        process.join(30)
        assert process.exitcode == 0
    assert not set(made[0]) & set(made[1])  # nothing made twice
    assert sorted(made[0] + made[1]) == keys
    bank = SyntheticBank(tmp_path)
    assert bank.done_keys() == set(keys)
    assert bank.claim(keys) == []  # stored keys are not claimed again
    assert bank.claim([40, 41]) == [40, 41] and SyntheticBank(tmp_path).claim([41, 42]) == [42]
    bank.release([40])
    assert bank.claim([40]) == [40]
    assert bank.prune()['temporary'] >= 3  # stale claims of dead writers freed
    assert bank.claim([41]) == [41]


HOLD = """
import sys, time
from torchgeo_earthsynth.bank import SyntheticBank
held = SyntheticBank(sys.argv[1]).claim([int(k) for k in sys.argv[2:]])
print(' '.join(map(str, held)), flush=True)
time.sleep(600)
"""


def test_synthesize_leaves_keys_a_live_writer_claimed(tmp_path: Path, mini_root: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, '-c', HOLD, str(tmp_path), '0', '1', '2'],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().split() == ['0', '1', '2']
        summary = main(synthesize_args(mini_root, tmp_path, 6))
        assert summary is not None and summary['written'] == 3  # keys 3-5: 0-2 are held
        assert SyntheticBank(tmp_path).done_keys() == {3, 4, 5}
    finally:
        holder.kill()  # dies holding its claims: they are free again
        holder.wait()
    summary = main(synthesize_args(mini_root, tmp_path, 6))
    assert summary is not None and (summary['written'], summary['bank_size']) == (3, 6)
    assert SyntheticBank(tmp_path).done_keys() == set(range(6))
    assert not list((tmp_path / 'train' / 'claims').iterdir())  # released once stored


def test_concurrent_synthesize_processes_split_the_keys(tmp_path: Path, mini_root: Path) -> None:
    command = [
        sys.executable,
        '-m',
        'torchgeo_earthsynth.cli',
        'synthesize',
        *synthesize_args(mini_root, tmp_path, 16),
    ]
    env = os.environ | {'OMP_NUM_THREADS': '1'}
    writers = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=600) for w in writers]
    assert [w.returncode for w in writers] == [0, 0], [e[-2000:] for _, e in outputs]
    lines = [
        json.loads(line)
        for part in (tmp_path / 'train' / 'parts').glob('*.jsonl')
        for line in part.read_text().splitlines()
    ]
    keys = [line['records'][0]['key'] for line in lines]
    assert sorted(keys) == list(range(16))  # every key made once: none twice, none lost
    assert len(SyntheticBank(tmp_path).refresh()) == 16
