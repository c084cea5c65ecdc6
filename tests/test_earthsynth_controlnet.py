# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Tests of the EarthSynth LightningModule, its export, checkpoints, CLI and DDP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
from torch.utils.data import DataLoader

from torchgeo_earthsynth.cli import main as cli_main
from torchgeo_earthsynth.datasets import EarthSynth180K
from torchgeo_earthsynth.lightning_modules import (
    AtomicCheckpointIO,
    DiffusersExport,
    EarthSynthControlNet,
)
from torchgeo_earthsynth.synthesis import Synthesizer, encode_condition

REPO = Path(__file__).resolve().parents[1]


def make_batch(size: int = 32, n: int = 2, seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(n, size, size, dtype=torch.long)
    mask[:, : size // 2] = 6
    mask[1, :, : size // 4] = 8
    return {
        'image': torch.rand(n, 3, size, size, generator=g) * 255,
        'mask': mask,
        'prompt': ['A satellite image of water', 'A satellite image of water, building'][:n],
    }


@pytest.fixture(scope='module')
def module() -> EarthSynthControlNet:
    return EarthSynthControlNet(image_size=32, val_num_samples=2, val_inference_steps=2)


def loader(root: Path, split: str = 'train', batch_size: int = 4) -> DataLoader[Any]:
    return DataLoader(EarthSynth180K(root, split=split), batch_size=batch_size)  # type: ignore[arg-type]


def test_trains_only_controlnet_and_tiny_unet(module: EarthSynthControlNet) -> None:
    module.train()
    loss = module.diffusion_loss(make_batch())
    assert loss.ndim == 0 and torch.isfinite(loss)
    module.zero_grad()
    loss.backward()
    assert all(p.grad is not None for p in module.controlnet.parameters() if p.requires_grad)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.unet.parameters())
    assert all(p.grad is None for p in module.text_encoder.parameters())
    assert all(p.grad is None for p in module.vae.parameters())
    assert not module.text_encoder.training  # frozen parts stay in eval mode
    module.zero_grad()


def test_pretrained_preset_freezes_unet() -> None:
    tiny = EarthSynthControlNet(image_size=32, train_unet=False)
    trained = {id(p) for p in tiny.trained_parameters()}
    assert trained == {id(p) for p in tiny.controlnet.parameters()}
    assert not any(p.requires_grad for p in tiny.unet.parameters())
    # frozen parts are in eval mode from construction on, not only once fit calls train()
    assert not tiny.unet.training and not tiny.text_encoder.training
    assert tiny.controlnet.training


def test_fused_adamw_on_cpu_matches_foreach() -> None:
    model = EarthSynthControlNet(image_size=32, train_unet=False)
    optimizer = model.configure_optimizers()['optimizer']
    assert optimizer.defaults['fused'] is True
    params = model.trained_parameters()
    start = [p.detach().clone() for p in params]
    initial = [p.clone() for p in start]
    for p in params:
        p.grad = torch.full_like(p, 0.5)
    optimizer.step()
    reference = torch.optim.AdamW(start, lr=model.hparams['lr'], weight_decay=1e-2, foreach=True)
    for p in start:
        p.grad = torch.full_like(p, 0.5)
    reference.step()
    assert all(not torch.equal(p, q) for p, q in zip(params, initial))  # the step moved them
    for p, q in zip(params, start):
        torch.testing.assert_close(p.detach(), q, atol=1e-6, rtol=1e-5)


def test_prompt_cache_gives_the_same_numbers() -> None:
    cached = EarthSynthControlNet(image_size=32, prompt_cache=True).eval()
    plain = EarthSynthControlNet(image_size=32, prompt_cache=False).eval()
    batch = make_batch()
    for _ in range(2):
        a = cached.diffusion_loss(batch, torch.Generator().manual_seed(1))
        b = plain.diffusion_loss(batch, torch.Generator().manual_seed(1))
        assert torch.equal(a, b)
    assert cached.prompt_encoder.misses == 2 and cached.prompt_encoder.hits == 2
    assert plain.prompt_encoder.hits == 0


def test_prompt_dropout_empties_prompts() -> None:
    model = EarthSynthControlNet(image_size=32, prompt_dropout=1.0).train()
    assert model._prompts(['a', 'b'], None) == ['', '']
    model.eval()
    assert model._prompts(['a', 'b'], None) == ['a', 'b']


def test_min_snr_and_v_prediction() -> None:
    batch = make_batch()
    base = EarthSynthControlNet(image_size=32).eval()
    huge_gamma = EarthSynthControlNet(image_size=32, snr_gamma=1e12).eval()
    small_gamma = EarthSynthControlNet(image_size=32, snr_gamma=0.01).eval()
    ref = base.diffusion_loss(batch, torch.Generator().manual_seed(3))
    # weight min(snr, gamma) / snr is 1 for a huge gamma and < 1 for a tiny one
    assert torch.allclose(huge_gamma.diffusion_loss(batch, torch.Generator().manual_seed(3)), ref)
    assert small_gamma.diffusion_loss(batch, torch.Generator().manual_seed(3)) < ref
    v = EarthSynthControlNet(image_size=32, prediction_type='v_prediction').eval()
    assert v.noise_scheduler.config.prediction_type == 'v_prediction'
    assert torch.isfinite(v.diffusion_loss(batch, torch.Generator().manual_seed(3)))


def test_local_loss_counts_foreground_only() -> None:
    batch = make_batch()
    plain = EarthSynthControlNet(image_size=32).eval()
    local = EarthSynthControlNet(image_size=32, local_loss_weight=1.0).eval()
    ref = plain.diffusion_loss(batch, torch.Generator().manual_seed(5))
    assert local.diffusion_loss(batch, torch.Generator().manual_seed(5)) > ref
    batch['mask'].zero_()  # no foreground: the local term adds nothing
    ref = plain.diffusion_loss(batch, torch.Generator().manual_seed(5))
    assert torch.equal(local.diffusion_loss(batch, torch.Generator().manual_seed(5)), ref)


def test_condition_encodings() -> None:
    mask = torch.tensor([[[0, 6], [8, 66]]])
    grey = encode_condition(mask, (4, 4))
    assert grey.shape == (1, 3, 4, 4)
    assert torch.allclose(grey[0, :, 0, 2], torch.full((3,), 6 / 255))  # NEAREST upsampling
    assert torch.allclose(grey[0, 1, 3, 3], torch.tensor(66 / 255))
    palette = encode_condition(mask, encoding='palette')
    assert not torch.allclose(palette[0, 0], palette[0, 1])
    with pytest.raises(ValueError, match='condition encoding'):
        encode_condition(mask, encoding='rgb')  # type: ignore[arg-type]


def test_ema_swaps_and_restores() -> None:
    model = EarthSynthControlNet(image_size=32, ema_decay=0.5)
    assert model.ema is not None
    param = model.trained_parameters()[0]
    before = param.detach().clone()
    model.ema.step(model.trained_parameters())  # the first step copies the weights
    with torch.no_grad():
        param.add_(1.0)
    model.ema.step(model.trained_parameters())
    decay = model.ema.cur_decay_value
    assert 0 < decay <= 0.5
    with model.ema_weights():
        assert torch.allclose(param, before + (1 - decay), atol=1e-6)
    assert torch.allclose(param, before + 1.0)


def test_predict_step_seeds(module: EarthSynthControlNet) -> None:
    module.hparams['predict_inference_steps'] = 2
    batch = make_batch()
    batch['seed'] = torch.tensor([7, 7])
    batch['mask'][1] = batch['mask'][0]
    batch['prompt'][1] = batch['prompt'][0]
    out = module.predict_step(batch, 0)
    assert out['image'].shape == (2, 3, 32, 32) and out['image'].dtype == torch.float32
    assert 0 <= out['image'].min() and out['image'].max() <= 255
    assert torch.allclose(out['image'][0], out['image'][1], atol=1e-3)
    assert torch.equal(out['mask'], batch['mask'])
    assert out['source'] == ['synthetic', 'synthetic']
    assert out['categories'][0, 6] == 1 and out['categories'][0, 8] == 0


def test_export_loads_in_diffusers_without_our_code(
    module: EarthSynthControlNet, tmp_path: Path
) -> None:
    full = module.save_pretrained(tmp_path / 'full')
    assert (full / 'controlnet' / 'diffusion_pytorch_model.safetensors').exists()
    assert 'EarthSynth' in (full / 'README.md').read_text()
    pipe = StableDiffusionControlNetPipeline.from_pretrained(full)
    pipe.set_progress_bar_config(disable=True)
    image = pipe(
        prompt='A satellite image of water',
        image=torch.zeros(1, 3, 32, 32),
        height=32,
        width=32,
        num_inference_steps=2,
        output_type='np',
    ).images
    assert image.shape == (1, 32, 32, 3)
    bare = module.save_pretrained(tmp_path / 'bare', full_pipeline=False)
    assert not (bare / 'model_index.json').exists()
    controlnet = ControlNetModel.from_pretrained(bare, subfolder='controlnet')
    for a, b in zip(controlnet.parameters(), module.controlnet.parameters()):
        assert torch.equal(a, b)
    # exporting again replaces the folder as a whole, leaving no temporary folders
    module.save_pretrained(tmp_path / 'bare', full_pipeline=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bare', 'full']


def test_full_scale_vae_trains_and_reloads_as_exported(tmp_path: Path) -> None:
    """``tiny_vae_downscale=1``: latents at image size, the export generates the same images."""
    module = EarthSynthControlNet(
        image_size=16, tiny_vae_downscale=1, prediction_type='v_prediction', seed=0
    )
    batch = make_batch(16)
    latents = module.vae.encode(batch['image'] / 127.5 - 1).latent_dist.mode()
    assert latents.shape == (2, 4, 16, 16)
    assert module.controlnet.config.conditioning_embedding_out_channels == (16,)
    loss = module.diffusion_loss(batch)
    loss.backward()
    assert all(p.grad is not None for p in module.controlnet.parameters() if p.requires_grad)
    masks, prompts = batch['mask'], batch['prompt']
    expected = module.synthesizer(2, 2.0).generate(masks, prompts, [0, 1])
    reloaded = Synthesizer.from_pretrained(
        module.save_pretrained(tmp_path / 'export'), num_inference_steps=2, guidance_scale=2.0
    )
    torch.testing.assert_close(reloaded.generate(masks, prompts, [0, 1]), expected)
    with pytest.raises(ValueError, match='VAE downscale must be one of'):
        EarthSynthControlNet(image_size=16, tiny_vae_downscale=4)


def test_wider_vae_options_shape_the_vae_and_its_warm_up_loss(tmp_path: Path) -> None:
    """``tiny_vae_width``/``tiny_vae_layers`` build the VAE; ``vae_kl_weight`` weighs its KL."""
    wide = EarthSynthControlNet(
        image_size=16, tiny_vae_downscale=1, tiny_vae_width=32, tiny_vae_layers=2, seed=0
    )
    assert wide.vae.config.block_out_channels == (32,)
    assert wide.vae.config.layers_per_block == 2
    exported = wide.save_pretrained(tmp_path / 'export')
    reloaded = Synthesizer.from_pretrained(exported, num_inference_steps=1)
    assert list(reloaded.pipeline.vae.config.block_out_channels) == [32]
    batch = make_batch(16)
    losses = []
    for kl_weight in (0.0, 1.0):
        module = EarthSynthControlNet(image_size=16, vae_kl_weight=kl_weight, seed=0)
        torch.manual_seed(0)  # the same posterior sample for both weights
        losses.append(float(module._vae_loss(batch)))
    assert losses[1] > losses[0]


def test_atomic_checkpoint_never_leaves_half_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    io = AtomicCheckpointIO()
    target = tmp_path / 'last.ckpt'
    io.save_checkpoint({'step': 1}, target)

    def killed(obj: object, f: Any) -> None:
        f.write(b'half a checkpoint')
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, 'save', killed)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({'step': 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True) == {'step': 1}
    assert [p.name for p in tmp_path.iterdir()] == ['last.ckpt']


class Capture(pl.Callback):
    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.start_step = trainer.global_step
        state = trainer.optimizers[0].state_dict()['state']
        self.optimizer_state = {k: v['exp_avg'].clone() for k, v in state.items()}


def test_fit_writes_checkpoint_export_grid_and_resumes(mini_root: Path, tmp_path: Path) -> None:
    model = EarthSynthControlNet(
        image_size=32, val_num_samples=2, val_inference_steps=2, vae_warmup_steps=1
    )
    trainer = pl.Trainer(
        accelerator='cpu',
        max_steps=3,
        limit_val_batches=1,
        default_root_dir=tmp_path,
        val_check_interval=3,
        check_val_every_n_epoch=None,
        plugins=[AtomicCheckpointIO()],
        callbacks=[DiffusersExport()],
        logger=pl.loggers.CSVLogger(tmp_path),
        enable_progress_bar=False,
    )
    trainer.fit(model, loader(mini_root), loader(mini_root, 'val'))
    log_dir = Path(trainer.log_dir or '')
    assert list((log_dir / 'samples').glob('val_step*.png'))
    assert (log_dir / 'export' / 'model_index.json').exists()
    ckpt = next((log_dir / 'checkpoints').glob('*.ckpt'))
    saved = torch.load(ckpt, weights_only=True)
    assert saved['global_step'] == 3
    assert model.latent_scale != 1.0  # fixed after the VAE warm-up

    capture = Capture()
    resumed = EarthSynthControlNet(image_size=32, val_num_samples=0, vae_warmup_steps=1)
    trainer = pl.Trainer(
        accelerator='cpu',
        max_steps=4,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        callbacks=[capture],
        enable_progress_bar=False,
    )
    trainer.fit(resumed, loader(mini_root), ckpt_path=ckpt)
    assert capture.start_step == 3
    expected = {k: v['exp_avg'] for k, v in saved['optimizer_states'][0]['state'].items()}
    assert expected.keys() == capture.optimizer_state.keys()
    assert all(torch.equal(expected[k], capture.optimizer_state[k]) for k in expected)
    assert resumed.latent_scale == model.latent_scale
    assert not any(p.requires_grad for p in resumed.vae.parameters())
    assert trainer.global_step == 4


@pytest.mark.parametrize('entry', ['earthsynth', 'torchgeo'])
def test_cli_fit_with_the_mini_config(tmp_path: Path, entry: str) -> None:
    from torchgeo.main import main as torchgeo_main

    main = cli_main if entry == 'earthsynth' else torchgeo_main  # same config, both CLIs
    main(
        [
            'fit',
            '--config',
            str(REPO / 'configs' / 'mini.yaml'),
            '--trainer.fast_dev_run',
            '1',
            '--trainer.default_root_dir',
            str(tmp_path),
            '--data.init_args.root',
            str(tmp_path / 'cache'),
            '--data.init_args.tile_size',
            '32',
            '--data.init_args.num_train',
            '8',
            '--data.init_args.num_val',
            '4',
            '--data.init_args.batch_size',
            '4',
            '--model.init_args.image_size',
            '32',
            '--model.init_args.val_inference_steps',
            '2',
            '--model.init_args.vae_warmup_steps',
            '0',
        ]
    )
    # fast_dev_run turns loggers off: the export still lands under default_root_dir
    assert (tmp_path / 'export' / 'model_index.json').exists()
    assert (tmp_path / 'export' / 'controlnet' / 'config.json').exists()


def test_cli_print_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(['fit', '--config', str(REPO / 'configs' / 'sd15.yaml'), '--print_config'])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert 'stable-diffusion-v1-5/stable-diffusion-v1-5' in out
    assert 'EarthSynthControlNet' in out and 'strategy: ddp' in out


def test_ddp_two_processes_end_with_identical_weights(mini_root: Path, tmp_path: Path) -> None:
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(REPO)}
    subprocess.run(
        [
            sys.executable,
            str(REPO / 'tests' / 'data' / 'train_ddp.py'),
            str(mini_root),
            str(tmp_path),
        ],
        check=True,
        env=env,
        timeout=300,
    )
    rank0 = torch.load(tmp_path / 'rank0.pt', weights_only=True)
    rank1 = torch.load(tmp_path / 'rank1.pt', weights_only=True)
    # the ranks saw different data but all-reduced gradients keep the weights equal
    assert rank0.pop('first_prompt') != rank1.pop('first_prompt')
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    initial = EarthSynthControlNet(image_size=32).trained_parameters()
    assert not torch.equal(initial[0], rank0['p0'])  # and training changed them
