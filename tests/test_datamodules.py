# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Tests of the EarthSynth datamodules and the TorchGeo CLI config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning import Trainer
from matplotlib.figure import Figure
from torch import Tensor, nn
from torch.utils.data import Subset, WeightedRandomSampler

from torchgeo_earthsynth.compat import DatasetNotFoundError
from torchgeo_earthsynth.datamodules import (
    EarthSynth180KDataModule,
    EarthSynthMiniDataModule,
    RefreshLabels,
    balanced_weights,
    sample_class_ids,
)
from torchgeo_earthsynth.datasets import EarthSynth180K, layout, make_mini_corpus
from torchgeo_earthsynth.vocabulary import CLASS_IDS, NUM_CLASSES, ids_from_prompt, multi_hot

CONFIG = Path(__file__).resolve().parents[1] / 'configs' / 'torchgeo_segmentation.yaml'


def trainer_in(state: str) -> Trainer:
    trainer = Trainer(
        accelerator='cpu',
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    setattr(trainer, state, True)
    return trainer


def first_batch(dm: EarthSynth180KDataModule, split: str = 'train') -> dict[str, Any]:
    dm.setup('fit')
    loader = dm.train_dataloader() if split == 'train' else dm.val_dataloader()
    batch: dict[str, Any] = next(iter(loader))
    return batch


def transfer(dm: EarthSynth180KDataModule, batch: dict[str, Any], state: str) -> dict[str, Any]:
    dm.trainer = trainer_in(state)
    copy = {k: v.clone() if isinstance(v, Tensor) else list(v) for k, v in batch.items()}
    out: dict[str, Any] = dm.on_after_batch_transfer(copy, 0)
    return out


class ConstantComposer(nn.Module):
    """Stand-in for CF-Comp: records its raw input and paints every image white."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[Tensor] = []

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        self.inputs.append(batch['image'].clone())
        batch['image'] = torch.full_like(batch['image'], 255.0)
        return batch


def test_val_batch_normalised_exactly(mini_root: Path) -> None:
    dm = EarthSynth180KDataModule(root=mini_root, batch_size=4)
    raw = first_batch(dm, 'val')
    assert raw['image'].dtype == torch.float32 and raw['image'].max() > 1
    out = transfer(dm, raw, 'validating')
    assert out['image'].shape == (4, 3, 32, 32) and out['image'].dtype == torch.float32
    torch.testing.assert_close(out['image'], raw['image'] / 255)
    assert out['mask'].dtype == torch.int64 and torch.equal(out['mask'], raw['mask'])
    assert out['categories'].shape == (4, NUM_CLASSES)
    assert out['prompt'] == raw['prompt'] and out['source'] == raw['source']


def test_train_batch_resized_and_normalised(mini_root: Path) -> None:
    dm = EarthSynth180KDataModule(root=mini_root, batch_size=4, size=16)
    raw = first_batch(dm)
    out = transfer(dm, raw, 'training')
    assert out['image'].shape == (4, 3, 16, 16) and out['image'].dtype == torch.float32
    assert 0 <= float(out['image'].min()) and float(out['image'].max()) <= 1
    assert float(out['image'].max()) > 0.2
    assert out['mask'].shape == (4, 16, 16) and out['mask'].dtype == torch.int64
    # NEAREST: every resized mask holds only ids of its source mask, and labels follow it
    for i in range(4):
        assert set(out['mask'][i].unique().tolist()) <= set(raw['mask'][i].unique().tolist())
    torch.testing.assert_close(out['categories'], torch.stack([multi_hot(m) for m in out['mask']]))
    assert isinstance(out['prompt'], list) and len(out['prompt']) == 4


def test_normalize_off_keeps_0_255(mini_root: Path) -> None:
    dm = EarthSynth180KDataModule(root=mini_root, batch_size=4, normalize=False, flip=False)
    assert float(dm.mean) == 0 and float(dm.std) == 1
    raw = first_batch(dm, 'val')
    out = transfer(dm, raw, 'validating')
    assert torch.equal(out['image'], raw['image'])
    out = transfer(dm, raw, 'training')
    assert torch.equal(out['image'], raw['image'])
    dm = EarthSynth180KDataModule(root=mini_root, batch_size=4, size=20, normalize=False)
    out = transfer(dm, raw, 'training')
    assert out['image'].shape == (4, 3, 20, 20) and float(out['image'].max()) > 100


def test_mask_resized_nearest() -> None:
    dm = EarthSynth180KDataModule(root='unused', size=13)
    mask = torch.zeros(2, 32, 32, dtype=torch.int64)
    mask[:, :, 1::2] = CLASS_IDS['warship']  # one-pixel stripes: bilinear would blend ids
    batch = {
        'image': torch.rand(2, 3, 32, 32) * 255,
        'mask': mask,
        'categories': torch.stack([multi_hot(m) for m in mask]),
        'prompt': ['A satellite image of warship'] * 2,
        'source': ['DOTA'] * 2,
    }
    out = dm.aug(batch)
    assert out['mask'].shape == (2, 13, 13) and out['mask'].dtype == torch.int64
    assert set(out['mask'].unique().tolist()) == {0, CLASS_IDS['warship']}


def test_refresh_labels_rewrites_only_changed_samples() -> None:
    mask = torch.zeros(2, 8, 8, dtype=torch.int64)
    mask[:, :4] = CLASS_IDS['water']
    categories = torch.stack([multi_hot(m) for m in mask])
    categories[0, CLASS_IDS['plane']] = 1  # the plane was cropped out of sample 0
    batch = {
        'mask': mask,
        'categories': categories,
        'prompt': ['A satellite image of water, plane', 'a lake, in free text'],
    }
    out = RefreshLabels()(batch)
    assert out['prompt'] == ['A satellite image of water', 'a lake, in free text']
    assert out['categories'][0].nonzero().flatten().tolist() == [0, CLASS_IDS['water']]
    assert torch.equal(out['categories'][1], categories[1])


def test_crop(mini_root: Path) -> None:
    dm = EarthSynth180KDataModule(
        root=mini_root, batch_size=2, size=16, crop=True, normalize=False, flip=False
    )
    raw = first_batch(dm, 'val')
    out = transfer(dm, raw, 'validating')
    assert out['image'].shape == (2, 3, 16, 16)
    assert torch.equal(out['image'], raw['image'][..., 8:24, 8:24])
    assert torch.equal(out['mask'], raw['mask'][..., 8:24, 8:24])
    out = transfer(dm, raw, 'training')
    assert out['mask'].shape == (2, 16, 16)
    image = out['image'][0]
    windows = [
        (y, x)
        for y in range(17)
        for x in range(17)
        if torch.equal(image, raw['image'][0, :, y : y + 16, x : x + 16])
    ]
    assert len(windows) == 1
    y, x = windows[0]
    assert torch.equal(out['mask'][0], raw['mask'][0, y : y + 16, x : x + 16])


def test_bad_size() -> None:
    with pytest.raises(ValueError, match='size must be a positive number of pixels or None, got 0'):
        EarthSynth180KDataModule(size=0)


def _rare_corpus(root: Path, common: int = 18, rare: int = 2, val: int = 0) -> Path:
    """``common`` grass scenes and ``rare`` grass+plane scenes in train; ``val`` in val."""
    rng = np.random.default_rng(0)
    for split, count in (('train', common + rare), ('val', val)):
        records = []
        for i in range(count):
            mask = np.full((16, 16), CLASS_IDS['grass'], dtype=np.uint8)
            if split == 'train' and i >= common:
                mask[4:8, 4:8] = CLASS_IDS['plane']
            image = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            records += layout.write_sample(
                root / split, f'FAST_{split}{i:03d}', image, mask, categories=False
            )
        if records:
            layout.write_jsonl(layout.jsonl_path(root / split), records)
    return root


def test_balanced_weights_values() -> None:
    weights = balanced_weights([[1], [1], [1], [1, 2]])
    torch.testing.assert_close(weights, torch.tensor([0.25, 0.25, 0.25, 1.0], dtype=torch.float64))
    weights = balanced_weights([[1], [1], [1], [1, 2]], reduction='mean')
    assert float(weights[3]) == pytest.approx((0.25 + 1.0) / 2)
    with pytest.raises(ValueError, match='sample 1 has no class id'):
        balanced_weights([[1], []])


def test_sample_class_ids_from_prompts_or_masks(tmp_path: Path, monkeypatch: Any) -> None:
    root = _rare_corpus(tmp_path)
    dataset = EarthSynth180K(root)

    def no_decoding(*args: Any) -> None:
        raise AssertionError('a mask was decoded although the JSONL has prompts')

    monkeypatch.setattr(dataset, '_read_mask', no_decoding)
    ids = sample_class_ids(dataset)
    assert ids[0] == [CLASS_IDS['grass']]
    assert ids[-1] == [CLASS_IDS['grass'], CLASS_IDS['plane']]
    monkeypatch.undo()
    layout.jsonl_path(root / 'train').unlink()  # now prompts come from the masks
    assert sample_class_ids(EarthSynth180K(root)) == ids


def test_balanced_sampler_favours_rare_classes(tmp_path: Path) -> None:
    root = _rare_corpus(tmp_path, val=1)
    plane = CLASS_IDS['plane']

    def rare_share(balanced: bool) -> float:
        dm = EarthSynth180KDataModule(root=root, batch_size=5, balanced=balanced)
        dm.setup('fit')
        loader = dm.train_dataloader()
        # the sampler sits in the resumable batch sampler
        assert isinstance(loader.batch_sampler.sampler, WeightedRandomSampler) == balanced
        torch.manual_seed(0)
        prompts = [p for _ in range(10) for batch in loader for p in batch['prompt']]
        assert len(prompts) == 200
        return sum(plane in ids_from_prompt(p) for p in prompts) / len(prompts)

    plain, balanced = rare_share(False), rare_share(True)
    assert plain == pytest.approx(0.1)  # every sample once an epoch
    assert balanced > 0.35 and balanced > 3 * plain  # expected 0.5


def test_val_split_off_train_when_no_val_folder(tmp_path: Path) -> None:
    root = _rare_corpus(tmp_path, common=16, rare=4)
    dm = EarthSynth180KDataModule(root=root, batch_size=2, val_split_pct=0.2, balanced=True)
    dm.setup('fit')
    assert isinstance(dm.train_dataset, Subset) and isinstance(dm.val_dataset, Subset)
    train, val = set(dm.train_dataset.indices), set(dm.val_dataset.indices)
    assert (len(train), len(val)) == (16, 4) and not train & val
    other = EarthSynth180KDataModule(root=root, val_split_pct=0.2)
    other.setup('validate')  # another rank, or a later run, holds out the same records
    assert isinstance(other.val_dataset, Subset) and set(other.val_dataset.indices) == val
    sampler = dm.train_dataloader().batch_sampler.sampler
    assert isinstance(sampler, WeightedRandomSampler) and len(sampler.weights) == 16
    with pytest.raises(ValueError, match=r'val_split_pct must be in \(0, 1\), got 1.0'):
        EarthSynth180KDataModule(root=root, val_split_pct=1.0)


def test_cf_comp_only_in_training(mini_root: Path) -> None:
    composer = ConstantComposer()
    dm = EarthSynth180KDataModule(root=mini_root, batch_size=2, size=16, cf_comp=composer)
    raw = first_batch(dm)
    out = transfer(dm, raw, 'training')
    assert len(composer.inputs) == 1
    assert composer.inputs[0].shape == (2, 3, 32, 32)  # native size, before train_aug
    assert float(composer.inputs[0].max()) > 1  # raw 0..255, before normalisation
    torch.testing.assert_close(out['image'], torch.ones(2, 3, 16, 16))  # then normalised
    for state in ('validating', 'sanity_checking', 'testing', 'predicting'):
        out = transfer(dm, raw, state)
        assert len(composer.inputs) == 1, state
        assert float(out['image'].min()) < 1


def test_plot(mini_root: Path) -> None:
    dm = EarthSynth180KDataModule(root=mini_root)
    sample = EarthSynth180K(mini_root, split='val')[0]
    sample['prediction'] = sample['mask']
    assert isinstance(dm.plot(sample), Figure)  # before setup: no dataset yet
    dm.setup('validate')
    fig = dm.plot(sample, suptitle='val')
    assert isinstance(fig, Figure) and len(fig.axes) == 3


def test_splits_and_missing_data(mini_root: Path, tmp_path: Path) -> None:
    dm = EarthSynth180KDataModule(root=mini_root, mode='both')
    dm.setup('fit')
    assert dm.train_dataset is not None and dm.val_dataset is not None
    assert len(dm.train_dataset) > 24  # full scenes plus category samples
    dm.setup('test')
    assert dm.test_dataset is not None
    assert len(dm.test_dataset) == len(dm.val_dataset)
    with pytest.raises(DatasetNotFoundError, match='Dataset not found'):
        EarthSynth180KDataModule(root=tmp_path / 'missing').setup('fit')


def test_mini_datamodule(mini_root: Path, tmp_path: Path) -> None:
    dm = EarthSynthMiniDataModule(
        root=mini_root.parent, tile_size=32, num_train=24, num_val=8, batch_size=4, size=16
    )
    assert isinstance(dm, EarthSynth180KDataModule)
    dm.setup('fit')
    assert dm.train_dataset is not None and dm.val_dataset is not None
    assert (len(dm.train_dataset), len(dm.val_dataset)) == (24, 8)
    out = transfer(dm, next(iter(dm.train_dataloader())), 'training')
    assert out['image'].shape == (4, 3, 16, 16) and float(out['image'].max()) <= 1
    fresh = EarthSynthMiniDataModule(root=tmp_path, tile_size=16, num_train=2, num_val=1)
    fresh.prepare_data()
    (corpus,) = tmp_path.iterdir()  # generated once, where the dataset will look for it
    assert (corpus / 'corpus.json').exists() and len(list((corpus / 'train/images').iterdir())) == 2
    assert make_mini_corpus(tmp_path, seed=0, size=16, num_train=2, num_val=1) == corpus


def _cli_args(mini_root: Path, tmp_path: Path) -> list[str]:
    return [
        'fit',
        '--config',
        str(CONFIG),
        '--data.init_args.root',
        str(mini_root.parent),
        '--data.init_args.tile_size',
        '32',
        '--data.init_args.num_train',
        '24',
        '--data.init_args.num_val',
        '8',
        '--data.init_args.batch_size',
        '2',
        '--trainer.accelerator',
        'cpu',
        '--trainer.default_root_dir',
        str(tmp_path),
        '--trainer.enable_progress_bar',
        'false',
    ]


def test_torchgeo_cli_fast_dev_run(mini_root: Path, tmp_path: Path, monkeypatch: Any) -> None:
    from torchgeo.main import main

    seen: list[tuple[str, tuple[int, ...], float]] = []
    original = EarthSynthMiniDataModule.on_after_batch_transfer

    def spy(self: EarthSynthMiniDataModule, batch: dict[str, Any], idx: int) -> dict[str, Any]:
        out = original(self, batch, idx)
        stage = 'train' if self.trainer is not None and self.trainer.training else 'val'
        seen.append((stage, tuple(out['image'].shape), float(out['image'].max())))
        return out

    plotted: list[dict[str, Any]] = []
    original_plot = EarthSynthMiniDataModule.plot

    def plot_spy(self: EarthSynthMiniDataModule, sample: dict[str, Any]) -> Figure:
        plotted.append(sample)
        return original_plot(self, sample)

    monkeypatch.setattr(EarthSynthMiniDataModule, 'on_after_batch_transfer', spy)
    monkeypatch.setattr(EarthSynthMiniDataModule, 'plot', plot_spy)
    monkeypatch.setattr('sys.argv', ['torchgeo'])
    main([*_cli_args(mini_root, tmp_path), '--trainer.fast_dev_run', '1'])
    assert [s[:2] for s in seen] == [('train', (2, 3, 32, 32)), ('val', (2, 3, 32, 32))]
    assert all(0 < peak <= 1 for *_, peak in seen)  # TorchGeo's task gets normalised images
    # the task's validation figure: denormalised with our mean/std back to 0..255
    assert len(plotted) == 1 and float(plotted[0]['image'].max()) > 1
    assert plotted[0]['prediction'].shape == (32, 32)


def test_earthsynth_cli_fit(mini_root: Path, tmp_path: Path, monkeypatch: Any) -> None:
    from torchgeo_earthsynth.cli import main

    monkeypatch.setattr('sys.argv', ['earthsynth'])
    main(
        [
            *_cli_args(mini_root, tmp_path),
            '--trainer.max_epochs',
            '1',
            '--trainer.limit_train_batches',
            '2',
            '--trainer.limit_val_batches',
            '1',
        ]
    )
    # earthsynth's CLI keeps checkpoints in <default_root_dir>/checkpoints, not version_N/
    checkpoints = list(tmp_path.glob('checkpoints/*.ckpt'))
    assert [c.name for c in checkpoints] == ['epoch=0-step=2.ckpt']
    state = torch.load(checkpoints[0], map_location='cpu', weights_only=False)
    assert state['global_step'] == 2
    assert state['hyper_parameters']['num_classes'] == NUM_CLASSES


def test_mini_datamodule_latitudes(tmp_path: Path) -> None:
    dm = EarthSynthMiniDataModule(
        root=tmp_path, tile_size=32, num_train=2, num_val=1, latitudes=(0, 60)
    )
    dm.prepare_data()
    (corpus,) = tmp_path.iterdir()  # the northern corpus only, where setup looks for it
    assert corpus.name.endswith('-lat0_60')
    dm.setup('fit')
    assert dm.train_dataset is not None
    assert all(float(s['metadata'][1]) >= 0 for s in dm.train_dataset)
