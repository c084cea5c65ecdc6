# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Resuming training (issue 14): `--ckpt_path last`, the run's seed, stale temporary files."""

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from torchgeo_earthsynth.cli import main as cli_main
from torchgeo_earthsynth.lightning_modules import AtomicCheckpointIO, EarthSynthControlNet
from torchgeo_earthsynth.lightning_modules.resume import (
    RNGState,
    clean_stale_temporaries,
    run_seed,
)

REPO = Path(__file__).resolve().parents[1]


def dead_pid() -> int:
    """The id of a process that has exited."""
    process = subprocess.Popen([sys.executable, '-c', 'pass'])
    process.wait()
    return process.pid


def test_stale_temporaries_are_cleaned(tmp_path: Path) -> None:
    pid = dead_pid()
    stale = tmp_path / f'.last.ckpt.tmp-{pid}'
    stale.write_bytes(b'half a checkpoint')
    stale_export = tmp_path / f'.export.tmp-{pid}'
    stale_export.mkdir()
    (stale_export / 'config.json').write_text('{}')
    live = tmp_path / f'.other.ckpt.tmp-{os.getppid()}'  # a running process's save
    live.write_bytes(b'being written')
    AtomicCheckpointIO().save_checkpoint({'global_step': 1}, tmp_path / 'last.ckpt')
    assert not stale.exists() and not stale_export.exists()
    assert live.exists()
    assert torch.load(tmp_path / 'last.ckpt', weights_only=True) == {'global_step': 1}
    assert clean_stale_temporaries(tmp_path / 'missing') == []


def tiny(**kwargs: object) -> EarthSynthControlNet:
    return EarthSynthControlNet(preset='tiny', image_size=16, **kwargs)  # type: ignore[arg-type]


def test_model_seed_follows_seed_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv('PL_GLOBAL_SEED', raising=False)
    assert run_seed(None) == 0 and run_seed(7) == 7
    pl.seed_everything(5)
    five = tiny()
    assert five.hparams['seed'] == 5
    pl.seed_everything(6)
    six, explicit = tiny(), tiny(seed=5)
    assert six.hparams['seed'] == 6 and explicit.hparams['seed'] == 5
    weights = [next(iter(m.unet.parameters())).detach() for m in (five, six, explicit)]
    assert not torch.equal(weights[0], weights[1])  # the run's seed changes the model
    assert torch.equal(weights[0], weights[2])  # an explicit seed wins


def mini_args(tmp_path: Path, run: str, *extra: str) -> list[str]:
    """`earthsynth fit` arguments: configs/mini.yaml on 8 tiny samples (2 batches an epoch)."""
    return [
        '--config',
        str(REPO / 'configs' / 'mini.yaml'),
        '--trainer.default_root_dir',
        str(tmp_path / run),
        '--trainer.val_check_interval',
        '2',
        '--trainer.enable_progress_bar',
        'false',
        '--data.init_args.root',
        str(tmp_path / 'cache'),
        '--data.init_args.num_train',
        '8',
        '--data.init_args.num_val',
        '4',
        '--data.init_args.batch_size',
        '4',
        '--model.init_args.val_num_samples',
        '1',
        '--model.init_args.val_inference_steps',
        '1',
        *extra,
    ]


def test_ckpt_path_last_resumes_with_the_shipped_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)  # the config's default_root_dir is relative
    args = mini_args(
        tmp_path,
        'outputs/mini',
        '--data.init_args.cf_comp',
        'null',
        '--model.init_args.vae_warmup_steps',
        '0',
    )
    cli_main(['fit', *args, '--trainer.max_steps', '2'])
    last = tmp_path / 'outputs' / 'mini' / 'checkpoints' / 'last.ckpt'
    assert torch.load(last, weights_only=False)['global_step'] == 2
    with caplog.at_level(logging.INFO), warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter('always')
        cli_main(['fit', *args, '--trainer.max_steps', '3', '--ckpt_path', 'last'])
    assert not [w for w in warned if 'no last checkpoint' in str(w.message)]
    assert f'Restoring states from the checkpoint path at {last}' in caplog.text
    assert torch.load(last, weights_only=False)['global_step'] == 3


def test_resumed_run_equals_the_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fit 3 steps, then to 5 with ``--ckpt_path last`` == fit 5 steps, weight for weight.

    Step 3 is mid-epoch (the loader's order and position must survive), the end of the VAE
    warm-up (the latent scale is fixed then) and after CF-Comp composed two batches (its
    generator and class frequencies must survive); step 4 starts a new epoch (its shuffle
    must follow the restored torch stream).
    """
    extra = ('--model.init_args.vae_warmup_steps', '3')  # mini.yaml as shipped otherwise
    trained = {}
    monkeypatch.chdir(tmp_path)
    for run in ('resumed', 'uninterrupted'):
        folder = tmp_path / run
        args = mini_args(tmp_path, run, *extra)
        if run == 'resumed':
            cli_main(['fit', *args, '--trainer.max_steps', '3'])
            cli_main(['fit', *args, '--trainer.max_steps', '5', '--ckpt_path', 'last'])
        else:
            cli_main(['fit', *args, '--trainer.max_steps', '5'])
        checkpoint = torch.load(folder / 'checkpoints/last.ckpt', weights_only=False)
        assert checkpoint['global_step'] == 5
        trained[run] = checkpoint['state_dict']
    assert trained['resumed'].keys() == trained['uninterrupted'].keys()
    differ = [
        name
        for name, value in trained['resumed'].items()
        if not torch.equal(value, trained['uninterrupted'][name])
    ]
    assert not differ, f'{len(differ)} tensors differ, e.g. {differ[:3]}'


def fast_args(tmp_path: Path, run: str) -> list[str]:
    """`mini_args` without CF-Comp or the VAE warm-up: the fewest moving parts."""
    return mini_args(
        tmp_path,
        run,
        '--data.init_args.cf_comp',
        'null',
        '--model.init_args.vae_warmup_steps',
        '0',
    )


def test_checkpoints_go_under_default_root_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cli_main(['fit', *fast_args(tmp_path, 'run'), '--trainer.max_steps', '2'])
    last = tmp_path / 'run' / 'checkpoints' / 'last.ckpt'
    assert torch.load(last, weights_only=False)['global_step'] == 2
    assert not (elsewhere / 'outputs').exists()  # mini.yaml's own root is not used
    assert not list((tmp_path / 'run').glob('**/version_*/checkpoints'))


def test_rerun_overwrites_and_ckpt_path_last_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = fast_args(tmp_path, 'run')
    folder = tmp_path / 'run' / 'checkpoints'
    cli_main(['fit', *args, '--trainer.max_steps', '2'])
    first = torch.load(folder / 'last.ckpt', weights_only=False)
    cli_main(['fit', *args, '--trainer.max_steps', '1'])  # a fresh run starts over
    assert [p.name for p in folder.glob('last*.ckpt')] == ['last.ckpt']
    rerun = torch.load(folder / 'last.ckpt', weights_only=False)
    assert first['global_step'] == 2 and rerun['global_step'] == 1  # overwritten, not kept
    cli_main(['fit', *args, '--trainer.max_steps', '3', '--ckpt_path', 'last'])
    assert torch.load(folder / 'last.ckpt', weights_only=False)['global_step'] == 3
    assert [p.name for p in folder.glob('last*.ckpt')] == ['last.ckpt']


def test_rng_state_round_trips_through_a_checkpoint() -> None:
    from types import SimpleNamespace

    import numpy as np

    module = torch.nn.Module()
    module.generator = torch.Generator().manual_seed(3)  # type: ignore[assignment]
    callback = RNGState()
    callback._trainer = SimpleNamespace(lightning_module=module, datamodule=None)  # type: ignore[assignment]
    saved = callback.state_dict()
    first = (torch.rand(3), np.random.rand(), torch.rand(2, generator=module.generator))
    torch.manual_seed(99)
    np.random.seed(99)
    module.generator.manual_seed(99)
    callback.load_state_dict(saved)
    callback.on_train_start(None, None)  # type: ignore[arg-type]
    again = (torch.rand(3), np.random.rand(), torch.rand(2, generator=module.generator))
    assert torch.equal(first[0], again[0]) and first[1] == again[1]
    assert torch.equal(first[2], again[2])
    assert set(saved['generators']) == {'model.generator'}
