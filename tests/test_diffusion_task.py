# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Tests of DiffusionTask's shared science: loss by hand, prompt dropout, EMA, export, seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from torchgeo_earthsynth import seeding
from torchgeo_earthsynth.datasets import EarthSynth180K
from torchgeo_earthsynth.lightning_modules import (
    DiffusersExport,
    DiffusionTask,
    EarthSynthControlNet,
)
from torchgeo_earthsynth.synthesis import Synthesizer

SIZE = 32


def make_batch(n: int = 4, seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(n, SIZE, SIZE, dtype=torch.long)
    mask[:, : SIZE // 2] = 6
    mask[:, :, : SIZE // 4] = 8
    mask[0] = 0  # one sample without foreground
    return {
        'image': torch.rand(n, 3, SIZE, SIZE, generator=g) * 255,
        'mask': mask,
        'prompt': ['A satellite image of water, building'] * n,
    }


def spied_loss(
    model: DiffusionTask, batch: dict[str, Any], seed: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[Tensor, dict[str, Tensor]]:
    """The module's loss, with the latents, noise, timesteps and prediction it used."""
    seen: dict[str, Tensor] = {}
    add_noise, forward = model.noise_scheduler.add_noise, model.forward

    def spy_add_noise(latents: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        seen.update(latents=latents, noise=noise, timesteps=timesteps)
        return add_noise(latents, noise, timesteps)

    def spy_forward(*args: Any, **kwargs: Any) -> Tensor:
        seen['pred'] = pred = forward(*args, **kwargs)
        return pred

    monkeypatch.setattr(model.noise_scheduler, 'add_noise', spy_add_noise)
    monkeypatch.setattr(model, 'forward', spy_forward)
    loss = model.diffusion_loss(batch, torch.Generator().manual_seed(seed))
    monkeypatch.undo()
    return loss, seen


def hand_loss(
    seen: dict[str, Tensor],
    alphas_cumprod: Tensor,
    mask: Tensor,
    v_prediction: bool,
    snr_gamma: float | None,
    local_weight: float,
) -> tuple[Tensor, Tensor]:
    """The loss written out from the papers' formulas, and the per-sample weights."""
    a = alphas_cumprod[seen['timesteps']].double()
    latents, noise, pred = (seen[k].double() for k in ('latents', 'noise', 'pred'))
    # v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho), else the target is the noise
    scale = a.view(-1, 1, 1, 1)
    target = scale.sqrt() * noise - (1 - scale).sqrt() * latents if v_prediction else noise
    error = (pred - target) ** 2
    snr = a / (1 - a)
    if snr_gamma is None:
        weight = torch.ones_like(snr)
    else:  # min-SNR (Hang et al.): min(snr, gamma) / snr, or / (snr + 1) for v
        weight = torch.minimum(snr, torch.full_like(snr, snr_gamma))
        weight = weight / (snr + 1 if v_prediction else snr)
    # the foreground at the latents' resolution: every second pixel (nearest, factor 2)
    fg = (mask[:, ::2, ::2] > 0).double().unsqueeze(1)
    channels = error.shape[1]
    local = (error * fg).sum(dim=(1, 2, 3)) / (fg.sum(dim=(1, 2, 3)) * channels)
    per_sample = error.mean(dim=(1, 2, 3)) + local_weight * local.nan_to_num(0.0)
    return (weight * per_sample).mean(), weight


@pytest.mark.parametrize(
    ('prediction_type', 'snr_gamma', 'local_weight'),
    [
        ('v_prediction', 5.0, 0.0),
        ('epsilon', 0.5, 0.0),
        ('epsilon', None, 1.0),
        ('epsilon', 0.5, 1.0),  # the local term gets the min-SNR weight too
        ('v_prediction', 5.0, 0.5),
    ],
)
def test_loss_matches_a_hand_computation(
    prediction_type: str,
    snr_gamma: float | None,
    local_weight: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = EarthSynthControlNet(
        image_size=SIZE,
        prediction_type=prediction_type,  # type: ignore[arg-type]
        snr_gamma=snr_gamma,
        local_loss_weight=local_weight,
    ).eval()
    batch = make_batch()
    loss, seen = spied_loss(model, batch, 11, monkeypatch)
    v = prediction_type == 'v_prediction'
    alphas = model.noise_scheduler.alphas_cumprod
    expected, weight = hand_loss(seen, alphas, batch['mask'], v, snr_gamma, local_weight)
    if snr_gamma is not None:
        assert (weight < 0.999).any()  # the weighting is not a no-op for these timesteps
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-7)
    if local_weight:  # only foreground pixels count: the whole image as foreground differs
        everywhere = torch.ones_like(batch['mask'])
        wrong, _ = hand_loss(seen, alphas, everywhere, v, snr_gamma, local_weight)
        assert not torch.isclose(loss.double(), wrong, rtol=1e-4)


def test_prompt_dropout_rate_is_statistically_p() -> None:
    model = EarthSynthControlNet(image_size=SIZE, prompt_dropout=0.3).train()
    n = 4000
    kept = model._prompts(['a'] * n, torch.Generator().manual_seed(0))
    dropped = sum(p == '' for p in kept)
    # binomial(4000, 0.3): sd 29, so +-120 is over 4 sd
    assert abs(dropped - 0.3 * n) < 120
    assert all(p in ('', 'a') for p in kept)
    again = model._prompts(['a'] * n, torch.Generator().manual_seed(1))
    assert again != kept  # independent draws per call
    model.eval()
    assert model._prompts(['a'] * 10, None) == ['a'] * 10  # never at validation


class CountExports(DiffusersExport):
    """Record the global step of every export."""

    def __init__(self, dirpath: str) -> None:
        super().__init__(dirpath, every_n_train_steps=1)
        self.steps: list[int] = []

    def _export(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.steps.append(trainer.global_step)
        super()._export(trainer, module)


@pytest.fixture(scope='module')
def accumulated_run(
    mini_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[EarthSynthControlNet, pl.Trainer, CountExports]:
    """3 optimizer steps of 4 micro-batches each, the first a VAE warm-up step."""
    tmp_path = tmp_path_factory.mktemp('accumulated')
    model = EarthSynthControlNet(
        image_size=SIZE, val_num_samples=0, ema_decay=0.9, vae_warmup_steps=1
    )
    export = CountExports(str(tmp_path / 'export'))
    trainer = pl.Trainer(
        accelerator='cpu',
        max_steps=3,
        accumulate_grad_batches=4,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[export],
        default_root_dir=tmp_path,
    )
    loader = DataLoader(EarthSynth180K(mini_root), batch_size=2)  # type: ignore[arg-type]
    trainer.fit(model, loader)
    return model, trainer, export


def test_ema_steps_once_per_optimizer_step(
    accumulated_run: tuple[EarthSynthControlNet, pl.Trainer, CountExports],
) -> None:
    model, trainer, _ = accumulated_run
    assert trainer.global_step == 3
    assert model.ema is not None
    # 3 optimizer steps, the first a VAE warm-up: 2 EMA steps (12 micro-batches before)
    assert model.ema.optimization_step == 2
    assert len(model.ema.shadow_params) == len(model.trained_parameters())


def test_export_once_per_optimizer_step(
    accumulated_run: tuple[EarthSynthControlNet, pl.Trainer, CountExports],
) -> None:
    _, _, export = accumulated_run
    # every step exported once, and the end of training does not rewrite step 3
    assert export.steps == [1, 2, 3]
    assert export.last_export is not None and (export.last_export / 'model_index.json').exists()


def test_predict_seeds_are_unique_across_batches_and_ranks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = EarthSynthControlNet(image_size=SIZE, predict_inference_steps=1)
    used: list[list[int]] = []

    def fake_generate(self: Synthesizer, masks: Tensor, prompts: list[str], seeds: Any) -> Tensor:
        used.append([int(s) for s in seeds])
        return torch.zeros(len(masks), 3, SIZE, SIZE)

    monkeypatch.setattr(Synthesizer, 'generate', fake_generate)

    def run(rank: int) -> list[int]:
        monkeypatch.setattr(seeding, 'distributed_rank', lambda: rank)
        used.clear()
        for batch_idx, n in enumerate([4, 4, 2]):  # a short last batch
            out = model.predict_step(make_batch(n), batch_idx)
            assert out['seed'].tolist() == used[-1]
        return [s for seeds in used for s in seeds]

    rank0, rank1 = run(0), run(1)
    assert len(set(rank0)) == 10  # the short last batch reuses no earlier seed
    assert not set(rank0) & set(rank1)  # DDP ranks do not share seeds
    assert rank0 == run(0)  # and they are reproducible
    batch = make_batch(2)
    batch['seed'] = torch.tensor([7, 9])  # dataset-given seeds win
    assert model.predict_step(batch, 5)['seed'].tolist() == [7, 9]


def test_the_base_trains_a_text_only_unet() -> None:
    task = DiffusionTask(image_size=SIZE, local_loss_weight=1.0).train()
    assert [id(p) for p in task.trained_parameters()] == [id(p) for p in task.unet.parameters()]
    batch = make_batch(2)
    del batch['mask']  # no condition but the prompt; no foreground, so no local term
    loss = task.diffusion_loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in task.unet.parameters())
    assert all(p.grad is None for p in task.vae.parameters())
    with pytest.raises(NotImplementedError, match='does not define an export'):
        task.save_pretrained('unused')


def bf16_step(model: DiffusionTask, samples: list[dict[str, Any]], **trainer: Any) -> None:
    """One optimizer step under ``bf16-mixed`` on CPU; the trained weights must change."""
    torch.manual_seed(0)  # noise and timesteps independent of the tests run before
    fit = pl.Trainer(
        accelerator='cpu',
        precision='bf16-mixed',
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        **trainer,
    )
    before = [p.detach().clone() for p in model.trained_parameters()]
    fit.fit(model, DataLoader(samples, batch_size=len(samples)))  # type: ignore[arg-type]
    after = model.trained_parameters()
    assert any(not torch.equal(a, b) for a, b in zip(after, before))
    assert all(bool(torch.isfinite(p).all()) for p in after)


def test_gradient_clipping_under_bf16_mixed_trains() -> None:
    # The fused AdamW made Lightning refuse to clip under mixed precision ("does not allow
    # for gradient clipping"): train_controlnet.py's max_grad_norm=1.0 with bf16-mixed.
    model = EarthSynthControlNet(image_size=SIZE, val_num_samples=0)
    batch = make_batch(2)
    bf16_step(model, [{k: v[i] for k, v in batch.items()} for i in range(2)], gradient_clip_val=1.0)
    assert not model.trainer.optimizers[0].defaults['fused']


def test_bf16_mixed_keeps_a_pretrained_base_frozen_in_bfloat16(tiny_half_base: Path) -> None:
    model = EarthSynthControlNet(
        preset='pretrained', base_model=str(tiny_half_base), val_num_samples=0
    )
    batch = make_batch(2)
    image = torch.nn.functional.interpolate(batch['image'], size=64)
    mask = batch['mask'].repeat_interleave(2, -1).repeat_interleave(2, -2)
    bf16_step(model, [{'image': image[i], 'mask': mask[i], 'prompt': 'x'} for i in range(2)])
    for part in (model.unet, model.vae, model.text_encoder):
        assert part.dtype == torch.bfloat16
    assert model.controlnet.dtype == torch.float32
