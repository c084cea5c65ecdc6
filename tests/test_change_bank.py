# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The bank of change pairs: LEVIR-CD's layout, read back by TorchGeo's LEVIRCD, resumable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from torchgeo_earthsynth.bank import ChangePairBank
from torchgeo_earthsynth.synthesis import Synthesizer
from torchgeo_earthsynth.transforms import SyntheticChangePairs, fill_change_bank

SIZE = 16


def _pairs(count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    pairs = torch.randint(0, 256, (count, 2, 3, SIZE, SIZE), generator=generator).float()
    change = torch.rand(count, SIZE, SIZE, generator=generator) > 0.7
    return pairs, change


def test_stored_pairs_read_back_exactly_and_through_torchgeos_levircd(tmp_path: Path) -> None:
    bank = ChangePairBank(tmp_path / 'bank', durable=False)
    pairs, change = _pairs(3)
    assert bank.add(pairs, change, keys=[0, 1, 2]) == 3
    assert len(bank) == 3 and bank.done_keys() == {'0', '1', '2'}
    stored = {bank.load(stem)[0][0, 0, 0, 0].item(): bank.load(stem) for stem in bank.stems()}
    for i in range(3):
        got_pair, got_change = stored[pairs[i, 0, 0, 0, 0].item()]
        assert torch.equal(got_pair, pairs[i]) and torch.equal(got_change, change[i])
    dataset = bank.dataset()
    assert len(dataset) == 3
    for index, stem in enumerate(bank.stems()):  # LEVIRCD orders by name, as stems() does
        sample, (pair, mask) = dataset[index], bank.load(stem)
        assert torch.equal(sample['image'], pair)  # [2, 3, H, W]: before, after
        assert torch.equal(sample['mask'], mask[None].long())  # LEVIR-CD's 0/1 after its clamp


def test_an_orphan_image_is_pruned_and_counted_so_levircd_stays_aligned(tmp_path: Path) -> None:
    bank = ChangePairBank(tmp_path, durable=False)
    pairs, change = _pairs(2)
    bank.add(pairs, change, keys=['a', 'b'])
    label = next((tmp_path / 'label').glob('*.png'))
    label.unlink()  # a writer killed before the label: its before and after images remain
    assert len(bank.refresh()) == 1
    assert bank.problems['orphan images removed'] == 2
    assert len(list((tmp_path / 'A').iterdir())) == len(list((tmp_path / 'B').iterdir())) == 1
    assert len(bank.dataset()) == 1


def test_bad_input_and_paths_outside_the_bank_are_refused(tmp_path: Path) -> None:
    bank = ChangePairBank(tmp_path / 'bank', durable=False)
    pairs, change = _pairs(2)
    with pytest.raises(ValueError, match=r'expected pairs \[N, 2, 3, H, W\] and change'):
        bank.add(pairs[:, 0], change)
    with pytest.raises(ValueError, match='got 1 keys for 2 pairs'):
        bank.add(pairs, change, keys=[0])
    with pytest.raises(ValueError, match='NaN or infinite'):
        bank.add(pairs * float('nan'), change)
    with pytest.raises(ValueError, match="split must be one of \\('train', 'val', 'test'\\)"):
        ChangePairBank(tmp_path, split='../train')
    with pytest.raises(ValueError, match='holds no change pair'):
        bank.sample(1)
    bank.add(pairs[:1], change[:1], keys=[0])
    stem = bank.stems()[0]
    outside = tmp_path / 'outside.png'
    (tmp_path / 'bank' / 'B' / f'{stem}.png').rename(outside)
    os.symlink(outside, tmp_path / 'bank' / 'B' / f'{stem}.png')
    with pytest.raises(ValueError, match='resolves outside the bank'):
        bank.load(stem)


def test_fill_resumes_and_the_transform_draws_stored_pairs(tmp_path: Path) -> None:
    synth = Synthesizer.tiny(0, SIZE, 'earthsynth', num_inference_steps=2, guidance_scale=1.0)
    before = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 255
    bank = ChangePairBank(tmp_path, durable=False)
    assert fill_change_bank(synth, before[:2], bank, batch_size=2, progress=False) == 2
    assert fill_change_bank(synth, before, bank.refresh(), batch_size=2, progress=False) == 1
    assert bank.refresh().done_keys() == {'0', '1', '2'}
    stored = [bank.load(stem) for stem in bank.stems()]
    assert all(change.any() for _, change in stored)  # every pair gained a building

    augment = SyntheticChangePairs(bank=tmp_path, probability=1.0)
    batch = {
        'image': torch.zeros(4, 2, 3, SIZE, SIZE),
        'mask': torch.zeros(4, 1, SIZE, SIZE, dtype=torch.long),
    }
    out = augment(batch)
    assert augment.stats == {'batches': 1, 'generated': 0, 'drawn': 4}
    for image, mask in zip(out['image'], out['mask']):
        assert any(
            torch.equal(image, pair) and torch.equal(mask[0], change.long())
            for pair, change in stored
        )
    small = {'image': torch.zeros(1, 2, 3, 8, 8), 'mask': torch.zeros(1, 1, 8, 8)}
    with pytest.raises(ValueError, match=r'holds \(16, 16\) px pairs; this batch is \(8, 8\) px'):
        augment(small)
    with pytest.raises(ValueError, match='needs one source: synthesizer'):
        SyntheticChangePairs(synth, bank=tmp_path)
    with pytest.raises(ValueError, match='needs one source: synthesizer'):
        SyntheticChangePairs()
