# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The paper's path: the pretrained preset on an SD base folder (tiny, made here, no download)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from torch.utils.data import DataLoader

from torchgeo_earthsynth.datasets import EarthSynth180K
from torchgeo_earthsynth.lightning_modules import DiffusersExport, EarthSynthControlNet
from torchgeo_earthsynth.models import load_controlnet, tiny_controlnet, tiny_parts
from torchgeo_earthsynth.synthesis import Synthesizer

SIZE = 32
FROZEN = ('vae.', 'text_encoder.', 'unet.')


@pytest.fixture(scope='module')
def sd_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Stable Diffusion base in the diffusers layout (model_index.json + 5 folders)."""
    parts = tiny_parts(seed=3, image_size=SIZE)
    path = tmp_path_factory.mktemp('base') / 'tiny-sd'
    StableDiffusionPipeline(
        vae=parts.vae,
        text_encoder=parts.text_encoder,
        tokenizer=parts.tokenizer,
        unet=parts.unet,
        scheduler=parts.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(path)
    return path


@pytest.fixture(scope='module')
def given_controlnet(sd_base: Path) -> Path:
    """A ControlNet folder (nonzero zero-convolutions, unlike a fresh copy of the UNet)."""
    controlnet = tiny_controlnet(UNet2DConditionModel.from_pretrained(sd_base, subfolder='unet'))
    with torch.no_grad():
        for p in controlnet.parameters():
            p.add_(0.01)
    path = sd_base.parent / 'given'
    controlnet.save_pretrained(path / 'controlnet')
    return path


def pretrained(sd_base: Path, given: Path | None, **kwargs: Any) -> EarthSynthControlNet:
    return EarthSynthControlNet(
        preset='pretrained',
        base_model=str(sd_base),
        controlnet=None if given is None else str(given),
        controlnet_subfolder=None if given is None else 'controlnet',
        gradient_checkpointing=True,
        ema_decay=0.9,
        **kwargs,
    )


def loader(root: Path, split: str = 'train') -> DataLoader[Any]:
    return DataLoader(EarthSynth180K(root, split=split), batch_size=2)  # type: ignore[arg-type]


class Start(pl.Callback):
    """What the module holds when training starts (after a checkpoint is restored)."""

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        assert isinstance(module, EarthSynthControlNet) and module.ema is not None
        self.controlnet = {k: v.clone() for k, v in module.controlnet.state_dict().items()}
        self.ema_steps = module.ema.optimization_step


def test_fit_and_resume_from_a_given_controlnet(
    sd_base: Path, given_controlnet: Path, mini_root: Path, tmp_path: Path
) -> None:
    model = pretrained(sd_base, given_controlnet, val_num_samples=1, val_inference_steps=2)
    start = load_controlnet(str(given_controlnet), 'controlnet').state_dict()
    assert all(torch.equal(v, model.controlnet.state_dict()[k]) for k, v in start.items())
    assert model.controlnet.is_gradient_checkpointing
    assert not any(p.requires_grad for p in model.unet.parameters())
    assert model.strict_loading is False
    base_unet = UNet2DConditionModel.from_pretrained(sd_base, subfolder='unet').state_dict()

    exports: list[int] = []
    export = DiffusersExport(every_n_train_steps=1)
    original = model.save_pretrained

    def counted(directory: str | Path, full_pipeline: bool | None = None) -> Path:
        exports.append(model.global_step)
        return original(directory, full_pipeline)

    model.save_pretrained = counted  # type: ignore[method-assign]
    trainer = pl.Trainer(
        accelerator='cpu',
        max_steps=2,
        accumulate_grad_batches=2,
        val_check_interval=4,
        check_val_every_n_epoch=None,
        limit_val_batches=1,
        default_root_dir=tmp_path,
        logger=pl.loggers.CSVLogger(tmp_path),
        callbacks=[export],
        enable_progress_bar=False,
    )
    trainer.fit(model, loader(mini_root), loader(mini_root, 'val'))
    assert exports == [1, 2]  # once per optimizer step, EMA and accumulation together
    assert model.ema is not None and model.ema.optimization_step == 2
    log_dir = Path(trainer.log_dir or '')
    assert list((log_dir / 'samples').glob('val_step*.png'))
    # the export is the ControlNet alone, and loads on the base with our Synthesizer
    assert (log_dir / 'export' / 'controlnet' / 'config.json').exists()
    assert not (log_dir / 'export' / 'model_index.json').exists()
    synth = Synthesizer.from_pretrained(log_dir / 'export', base=sd_base, num_inference_steps=2)
    mask = torch.zeros(1, SIZE, SIZE, dtype=torch.long)
    assert torch.isfinite(synth.generate(mask, ['A satellite image of water'])).all()
    # the ControlNet trained, the frozen UNet did not
    assert any(not torch.equal(v, model.controlnet.state_dict()[k]) for k, v in start.items())
    assert all(torch.equal(v, model.unet.state_dict()[k]) for k, v in base_unet.items())

    ckpt = next((log_dir / 'checkpoints').glob('*.ckpt'))
    saved = torch.load(ckpt, weights_only=True)
    keys = list(saved['state_dict'])
    assert not [k for k in keys if k.startswith(FROZEN)]  # they reload from base_model
    assert any(k.startswith('controlnet.') for k in keys)
    assert saved['ema']['optimization_step'] == 2

    resumed = pretrained(sd_base, given_controlnet, val_num_samples=0)
    at_start = Start()
    trainer = pl.Trainer(
        accelerator='cpu',
        max_steps=3,
        accumulate_grad_batches=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        callbacks=[at_start],
        enable_progress_bar=False,
    )
    trainer.fit(resumed, loader(mini_root), ckpt_path=ckpt)  # not strict: frozen keys absent
    state = saved['state_dict']
    assert all(torch.equal(v, state[f'controlnet.{k}']) for k, v in at_start.controlnet.items())
    assert at_start.ema_steps == 2
    assert resumed.ema is not None and resumed.ema.optimization_step == 3
    assert trainer.global_step == 3
    assert all(torch.equal(v, resumed.unet.state_dict()[k]) for k, v in base_unet.items())


def test_controlnet_from_the_base_unet_fits_its_vae(sd_base: Path) -> None:
    model = pretrained(sd_base, None)
    # a copy of the UNet whose condition embedding downsamples as the base's VAE (2x here)
    unet = model.unet.state_dict()
    controlnet = model.controlnet.state_dict()
    assert torch.equal(controlnet['conv_in.weight'], unet['conv_in.weight'])
    channels = model.controlnet.config.conditioning_embedding_out_channels
    assert len(channels) == len(model.vae.config.block_out_channels) == 2
    batch = {
        'image': torch.rand(2, 3, SIZE, SIZE) * 255,
        'mask': torch.randint(0, 10, (2, SIZE, SIZE)),
        'prompt': ['A satellite image of water'] * 2,
    }
    loss = model.diffusion_loss(batch, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
