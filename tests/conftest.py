# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Shared fixtures: a tiny mini corpus made once per session, offline hub, Agg plots."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import pytest

matplotlib.use('Agg')
os.environ.setdefault('HF_HUB_OFFLINE', '1')


@pytest.fixture(scope='session', autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep the mini-corpus cache out of the user's home during tests."""
    path = tmp_path_factory.mktemp('earthsynth-cache')
    os.environ['EARTHSYNTH_CACHE'] = str(path)
    return path


@pytest.fixture(scope='session')
def mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small mini corpus (32 px, 24 train / 8 val scenes) in the EarthSynth-180K layout."""
    from torchgeo_earthsynth.datasets import make_mini_corpus

    return make_mini_corpus(
        tmp_path_factory.mktemp('mini'), seed=0, size=32, num_train=24, num_val=8
    )


@pytest.fixture(scope='session')
def _mini_batch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from torchgeo_earthsynth.datamodules import EarthSynthMiniDataModule

    datamodule = EarthSynthMiniDataModule(
        root=tmp_path_factory.mktemp('mini-batch'),
        tile_size=32,
        num_train=4,
        num_val=4,
        batch_size=4,
        normalize=False,
    )
    datamodule.setup('fit')
    return dict(next(iter(datamodule.train_dataloader())))


@pytest.fixture
def mini_batch(_mini_batch: dict[str, Any]) -> dict[str, Any]:
    """The first training batch of a 4-scene, 32 px mini corpus (a new dict each test)."""
    return dict(_mini_batch)


@pytest.fixture
def fit_fast(tmp_path: Path) -> Callable[..., Path]:
    """``earthsynth fit`` of a tiny config for 4 steps into ``tmp_path``; returns the export.

    16 mini scenes in batches of 4: one VAE warm-up step, then three diffusion steps at
    lr 0.05 (large enough for each condition to show), 2-step validation samples.
    """
    from torchgeo_earthsynth.cli import main

    def fit(config: Path, *extra: str) -> Path:
        args = {
            'trainer.fast_dev_run': 4,
            'trainer.default_root_dir': tmp_path,
            'data.init_args.root': tmp_path / 'cache',
            'data.init_args.num_train': 16,
            'data.init_args.num_val': 4,
            'data.init_args.batch_size': 4,
            'model.init_args.val_inference_steps': 2,
            'model.init_args.val_num_samples': 2,
            'model.init_args.vae_warmup_steps': 1,
            'model.init_args.lr': 0.05,
            'model.init_args.lr_warmup_steps': 0,
        }
        options = [item for key, value in args.items() for item in (f'--{key}', str(value))]
        main(['fit', '--config', str(config), *options, *extra])
        return tmp_path / 'export'

    return fit


@pytest.fixture
def tiny_half_base(tmp_path: Path) -> Path:
    """A tiny SD folder whose weights are float16 on disk (as the hub's fp16 variants)."""
    import torch

    from torchgeo_earthsynth.models import tiny_parts

    parts = tiny_parts()
    for name in ('unet', 'vae', 'text_encoder'):
        getattr(parts, name).to(torch.float16).save_pretrained(tmp_path / 'base' / name)
    parts.tokenizer.save_pretrained(tmp_path / 'base' / 'tokenizer')
    parts.scheduler.save_pretrained(tmp_path / 'base' / 'scheduler')
    return tmp_path / 'base'


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker of the slowest tests (deselect with ``-m 'not paper_scale'``)."""
    config.addinivalue_line(
        'markers', 'paper_scale: real-architecture models on CPU, minutes each (the slowest)'
    )


def pytest_report_header() -> str:
    """Name the TorchGeo this run tests (3.11 runs 0.8.x, 3.12+ 0.10.x)."""
    from torchgeo_earthsynth.compat import TORCHGEO_VERSION

    return f'torchgeo: {TORCHGEO_VERSION}'


@pytest.fixture(scope='session')
def bank_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SyntheticBank filled with scenes of another mini corpus (stand-ins for generated ones)."""
    from torchgeo_earthsynth.bank import SyntheticBank
    from torchgeo_earthsynth.datasets import EarthSynth180K, make_mini_corpus

    other = make_mini_corpus(
        tmp_path_factory.mktemp('other'), seed=1, size=32, num_train=12, num_val=2
    )
    dataset = EarthSynth180K(other, split='train')
    root = tmp_path_factory.mktemp('bank')
    SyntheticBank(root, durable=False).add([dataset[i] for i in range(len(dataset))])
    return root


@pytest.fixture
def vhr10_checksums(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """Patch TorchGeo's VHR10 checksums to the fake files' under a root (as 0.10 checks them).

    Returns:
        A function of the dataset root (``tests/data/vhr10`` or a copy of it).
    """
    from torchgeo.datasets import VHR10

    from torchgeo_earthsynth.compat import TORCHGEO_VERSION_TUPLE

    script = Path(__file__).parent / 'data' / 'vhr10' / 'data.py'
    spec = importlib.util.spec_from_file_location('fake_vhr10', script)
    assert spec is not None and spec.loader is not None
    fake_vhr10 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fake_vhr10)

    def patch(root: Path) -> None:
        for meta, (algorithm, digest) in fake_vhr10.checksums(TORCHGEO_VERSION_TUPLE, root).items():
            monkeypatch.setitem(getattr(VHR10, meta), algorithm, digest)

    return patch


#: Runs `tests/data/synthesize_ddp.py`: (bank root, limits, environment) -> (summaries, keys).
DDPSynthesis = Callable[..., tuple[list[dict[str, Any]], list[int]]]


@pytest.fixture
def ddp_synthesize() -> DDPSynthesis:
    """Run ``earthsynth synthesize`` under DDP (2 CPU processes) once per limit, resuming.

    Returns:
        A function of the bank root, the limits (``'5,8'``) and more of the script's
        environment (``SYNTH_CORPUS=...`` or ``SYNTH_DATA=...``), returning rank 0's summary
        of each run and the key of every sample the ranks wrote (in their parts), in order.
    """

    def run(bank: Path, limits: str, **env: str) -> tuple[list[dict[str, Any]], list[int]]:
        script = Path(__file__).parent / 'data' / 'synthesize_ddp.py'
        settings = {'SYNTH_BANK': str(bank), 'SYNTH_LIMITS': limits, 'OMP_NUM_THREADS': '1'}
        environ = os.environ | env | settings
        done = subprocess.run(
            [sys.executable, str(script)], env=environ, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        summaries = [
            json.loads(line.removeprefix('SUMMARY '))
            for line in done.stdout.splitlines()
            if line.startswith('SUMMARY ')
        ]
        keys = [  # a sample's first record holds its key (the others: its category samples)
            json.loads(line)['records'][0]['key']
            for part in sorted((bank / 'train' / 'parts').glob('*.jsonl'))
            for line in part.read_text().splitlines()
        ]
        return summaries, keys

    return run
