# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Synthetic change pairs: exact change masks, inside TorchGeo's ChangeDetectionTask loop."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import Dataset

from torchgeo_earthsynth.compat import ChangeDetectionTask, NonGeoDataModule
from torchgeo_earthsynth.datamodules import MiniChangeDetectionDataModule
from torchgeo_earthsynth.synthesis import Synthesizer
from torchgeo_earthsynth.transforms import SyntheticChangePairs, make_change_pairs

SIZE = 32
CONFIGS = Path(__file__).resolve().parents[1] / 'configs'


@pytest.fixture(scope='module')
def synth() -> Synthesizer:
    return Synthesizer.tiny(0, SIZE, 'earthsynth', num_inference_steps=2, guidance_scale=1.0)


def test_pairs_change_exactly_where_buildings_were_added(synth: Synthesizer) -> None:
    before = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 255
    pairs, change = make_change_pairs(synth, before, seeds=[0, 1, 2])
    assert pairs.shape == (3, 2, 3, SIZE, SIZE) and change.shape == (3, SIZE, SIZE)
    assert torch.equal(pairs[:, 0], before)
    assert change.any(dim=(1, 2)).all()  # every pair gained a building
    outside = ~change[:, None].expand(-1, 3, -1, -1)
    assert torch.equal(pairs[:, 1][outside], before[outside])  # bit for bit outside the change
    inside = change[:, None].expand(-1, 3, -1, -1)
    assert not torch.allclose(pairs[:, 1][inside], before[inside])
    again, same = make_change_pairs(synth, before, seeds=[0, 1, 2])
    assert torch.equal(same, change) and torch.equal(again, pairs)  # seeded


class _ChangeScenes(Dataset[dict[str, Any]]):
    """LEVIR-CD-layout samples: two dates of a scene and its binary change mask."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> dict[str, Any]:
        generator = torch.Generator().manual_seed(index)
        before = torch.rand(3, SIZE, SIZE, generator=generator) * 255
        return {
            'image': torch.stack([before, before]),
            'mask': torch.zeros(1, SIZE, SIZE, dtype=torch.long),
        }


def _scaled(batch: dict[str, Any]) -> dict[str, Any]:
    return {**batch, 'image': batch['image'] / 255}


class _ChangeDataModule(NonGeoDataModule):
    """A LEVIR-CD-style datamodule over the fake scenes, normalising as TorchGeo's default.

    (TorchGeo 0.8.1's ``LEVIRCDDataModule`` augmentation refuses LEVIRCD's own [B, 1, H, W]
    masks under kornia 0.9: "Video and mask must have the same number of frames".)
    """

    def __init__(self) -> None:
        super().__init__(_ChangeScenes, batch_size=4)
        self.aug = _scaled

    def setup(self, stage: str) -> None:
        self.train_dataset = self.val_dataset = _ChangeScenes()


def test_synthetic_pairs_train_torchgeos_change_detection_task(synth: Synthesizer) -> None:
    datamodule = _ChangeDataModule()
    pairs = SyntheticChangePairs(synth, probability=1.0)
    pairs.attach(datamodule)
    pairs.attach(datamodule)  # twice: once
    assert datamodule.train_aug is pairs and pairs.then is not None
    seen: list[dict[str, Any]] = []
    task = ChangeDetectionTask(model='fcn', in_channels=3, task='binary', loss='bce', num_filters=8)
    original = task.training_step

    def recording_step(batch: dict[str, Any], batch_idx: int) -> Any:
        seen.append(batch)
        return original(batch, batch_idx)

    task.training_step = recording_step  # type: ignore[method-assign]
    Trainer(fast_dev_run=1, accelerator='cpu', logger=False, enable_checkpointing=False).fit(
        task, datamodule
    )
    assert pairs.generated == 4
    batch = seen[0]
    assert batch['image'].shape == (4, 2, 3, SIZE, SIZE)
    assert batch['mask'].shape == (4, 1, SIZE, SIZE)
    assert set(batch['mask'].unique().tolist()) == {0, 1}  # real masks were all zero
    # normalised by the datamodule's own augmentation afterwards (TorchGeo: / 255)
    assert batch['image'].max() <= 1.0


def test_refuses_batches_that_are_not_pairs(synth: Synthesizer) -> None:
    with pytest.raises(ValueError, match=r'image \[B, 2, 3, H, W\]'):
        SyntheticChangePairs(synth)({'image': torch.zeros(2, 3, SIZE, SIZE), 'mask': None})
    with pytest.raises(ValueError, match='probability'):
        SyntheticChangePairs(synth, probability=2)
    text_only = Synthesizer.tiny(0, SIZE, 'diffusionsat', num_inference_steps=2)
    with pytest.raises(ValueError, match='in-paints'):
        make_change_pairs(text_only, torch.zeros(1, 3, SIZE, SIZE), [0])


def test_mini_change_datamodule_is_levir_cd_layout(tmp_path: Path) -> None:
    datamodule = MiniChangeDetectionDataModule(
        batch_size=4, root=tmp_path, tile_size=SIZE, num_train=8, num_val=4, change_probability=1
    )
    datamodule.setup('fit')
    sample = datamodule.train_dataset[0]
    assert sample['image'].shape == (2, 3, SIZE, SIZE) and sample['mask'].shape == (1, SIZE, SIZE)
    assert set(sample['mask'].unique().tolist()) == {0, 1}  # change_probability 1: buildings came
    changed = sample['mask'][0].bool()
    # outside the change the place looks alike (same classes, another date), inside it differs
    difference = (sample['image'][1] - sample['image'][0]).abs().mean(dim=0)
    assert difference[changed].mean() > difference[~changed].mean()
    assert len(datamodule.val_dataset) == len(datamodule.test_dataset) == 2
    batch = datamodule.aug({'image': sample['image'][None], 'mask': sample['mask'][None]})
    assert batch['image'].max() <= 1.0
    datamodule.plot(sample)
    plt.close('all')


def test_change_pairs_train_change_detection_from_a_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchgeo.main import main

    generated: list[int] = []
    forward = SyntheticChangePairs.forward

    def spy(self: SyntheticChangePairs, batch: dict[str, Any]) -> dict[str, Any]:
        out = forward(self, batch)
        generated.append(self.generated)
        assert out['image'].shape[1:3] == (2, 3) and out['image'].max() <= 1.0  # then scaled
        return out

    monkeypatch.setattr(SyntheticChangePairs, 'forward', spy)
    monkeypatch.setattr(sys, 'argv', ['torchgeo'])
    synthetic = '--data.init_args.synthetic.init_args.'
    main(
        [
            'fit',
            '--config',
            str(CONFIGS / 'torchgeo_change_synthetic.yaml'),
            '--model.init_args.model',
            'fcn',
            '--model.init_args.num_filters',
            '8',
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
            '--trainer.default_root_dir',
            str(tmp_path),
            '--data.init_args.root',
            str(tmp_path / 'mini'),
            '--data.init_args.batch_size',
            '4',
            '--data.init_args.num_train',
            '8',
            '--data.init_args.num_val',
            '4',
            f'{synthetic}probability',
            '1.0',
            f'{synthetic}synthesizer.init_args.num_inference_steps',
            '2',
        ]
    )
    assert generated == [4, 8]  # two steps, every row synthetic (the shipped generator's)
