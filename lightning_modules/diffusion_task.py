# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""DiffusionTask: the training science every generator family shares, as a TorchGeo task."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.plugins.precision import MixedPrecision
from matplotlib.figure import Figure
from torch import Tensor
from torch.optim import AdamW
from torch.optim.lr_scheduler import LambdaLR

from torchgeo_earthsynth.models import SD15_ID
from torchgeo_earthsynth.seeding import sample_seeds
from torchgeo_earthsynth.synthesis.synthesizer import Synthesizer

from .diffusion_loss import (
    denoising_loss,
    drop_prompts,
    min_snr_weight,
    prediction_target,
)
from .diffusion_networks import DiffusionNetworks
from .figures import log_figure
from .latent_cache import LatentCache
from .resume import restore_rng_states

__all__ = ('DiffusionTask',)


class DiffusionTask(DiffusionNetworks):
    """Train a latent diffusion model on a frozen VAE and text encoder (shared science).

    Holds what every generator family trains with: noise sampling, epsilon/v targets, min-SNR
    weighting, prompt dropout (classifier-free guidance), the optional local loss on the
    foreground, an EMA of the trained weights (stepped once per optimizer step), the prompt
    cache, the latent cache of the frozen VAE's posteriors, the VAE warm-up and freezing of
    the tiny preset, AdamW over the trained parameters only, frozen pretrained weights kept
    out of checkpoints, validation sample grids and a diffusers export.

    A family subclass adds only what it conditions on and what trains, by overriding:

    * :meth:`configure_condition_models`: build the conditioning networks (e.g. a
      ControlNet); called after the base parts exist and before freezing and the EMA.
    * :meth:`trained_modules`: the modules the optimizer and the EMA update (default:
      the UNet when ``train_unet``).
    * :meth:`condition_inputs`: the batch's conditions as keyword arguments of
      :meth:`forward` (default: none).
    * :meth:`forward`: predict noise (or v) from noisy latents, text embeddings and those
      conditions (default: the UNet, conditions passed to it as keyword arguments).
    * :meth:`foreground`: the pixels the local loss weighs (default: ``mask > 0``).
    * :meth:`synthesizer`, :meth:`sample_figure` and ``predict_step``: generation for
      validation grids and prediction (seeds from :meth:`predict_seeds`).
    * :meth:`write_export` and :meth:`export_metadata`: what :meth:`save_pretrained` writes.

    The networks' building, freezing, EMA, checkpoints and export live in its base,
    :class:`~.diffusion_networks.DiffusionNetworks`. Devices, precision, strategies
    (DDP/FSDP), checkpointing and logging are the Trainer's.

    .. versionadded:: 0.2
    """

    monitor = 'val_loss'
    mode = 'min'
    latent_cache: LatentCache | None = None  # built at the first frozen-VAE encode

    def __init__(
        self,
        preset: Literal['tiny', 'pretrained'] = 'tiny',
        base_model: str = SD15_ID,
        image_size: int = 64,
        prediction_type: Literal['epsilon', 'v_prediction'] | None = None,
        train_unet: bool | None = None,
        lr: float = 1e-4,
        weight_decay: float = 1e-2,
        lr_warmup_steps: int = 0,
        prompt_dropout: float = 0.1,
        snr_gamma: float | None = None,
        local_loss_weight: float = 0.0,
        ema_decay: float | None = None,
        prompt_cache: bool = True,
        latent_cache: int = 0,
        gradient_checkpointing: bool = False,
        vae_warmup_steps: int = 0,
        tiny_vae_downscale: int = 2,
        tiny_vae_width: int = 16,
        tiny_vae_layers: int = 1,
        vae_kl_weight: float = 1e-3,
        val_num_samples: int = 8,
        val_inference_steps: int = 20,
        val_guidance_scale: float = 3.0,
        predict_inference_steps: int = 20,
        predict_guidance_scale: float = 3.0,
        seed: int | None = None,
    ) -> None:
        """Initialize a new DiffusionTask instance.

        Args:
            preset: ``tiny`` (small parts built in code) or ``pretrained`` (SD base).
            base_model: hub id or local folder of the SD base (``pretrained`` preset).
            image_size: training image size of the tiny preset.
            prediction_type: ``epsilon`` or ``v_prediction`` (default: the scheduler's).
            train_unet: also train the UNet (default: only in the tiny preset).
            lr: learning rate (AdamW).
            weight_decay: AdamW weight decay.
            lr_warmup_steps: linear learning-rate warm-up steps.
            prompt_dropout: probability of an empty prompt (classifier-free guidance).
            snr_gamma: min-SNR loss weighting gamma (None: off).
            local_loss_weight: weight of the extra loss on the foreground pixels.
            ema_decay: keep an EMA of the trained weights (used to validate and export).
            prompt_cache: cache prompt embeddings (the text encoder is frozen).
            latent_cache: cache the frozen VAE's posteriors of up to this many images, keyed
                by their bytes (0: off). Exact: a repeated image skips the encoder and draws
                its latent from the same mean and std; a changed one (a CF-Comp composite, a
                flip) misses. Nothing is cached while the tiny preset's VAE warms up.
            gradient_checkpointing: trade compute for memory in the trained networks.
            vae_warmup_steps: tiny preset only: first fit the random VAE on reconstruction
                for this many steps, then freeze it (nothing is pretrained there).
            tiny_vae_downscale: tiny preset only: the VAE's downscale factor, 2 (latents
                half the image size) or 1 (latents at image size, a three-level UNet, about
                1.2x the step cost: the VAE keeps a 32 px tile's fine texture).
            tiny_vae_width: tiny preset only: channels of the VAE's first block (16; a
                wider VAE keeps finer detail at a higher warm-up step cost).
            tiny_vae_layers: tiny preset only: ResNet layers per VAE block.
            vae_kl_weight: weight of the KL term (per pixel value) in the VAE warm-up; lower
                keeps finer detail (Stable Diffusion's VAE used 1e-6 on a summed loss).
            val_num_samples: validation samples generated and logged as a grid.
            val_inference_steps: sampler steps for validation samples.
            val_guidance_scale: guidance scale for validation samples (3.0 suits the tiny
                preset; configs/sd15.yaml uses 7.5, as upstream EarthSynth's test.py).
            predict_inference_steps: sampler steps in :meth:`predict_step`.
            predict_guidance_scale: guidance scale in :meth:`predict_step` (3.0 for the tiny
                preset; 7.5 is :class:`Synthesizer`'s default for real weights).
            seed: initialisation and sampling seed (None: the run's ``seed_everything``,
                else 0; see :func:`~torchgeo_earthsynth.lightning_modules.resume.run_seed`).
        """
        super().__init__()

    def synthesizer(self, num_inference_steps: int, guidance_scale: float) -> Synthesizer:
        """A :class:`Synthesizer` over this module's current weights and prompt cache.

        Raises:
            NotImplementedError: in the base; each family defines its own.
        """
        raise NotImplementedError(f'{type(self).__name__} does not define a synthesizer')

    # ------------------------------------------------------------------ loss
    def forward(
        self, noisy: Tensor, timesteps: Tensor, text: Tensor, **conditions: Tensor
    ) -> Tensor:
        """Predict noise (or v) of noisy latents given text embeddings and conditions."""
        pred: Tensor = self.unet(
            noisy, timesteps, encoder_hidden_states=text, return_dict=False, **conditions
        )[0]
        return pred

    def condition_inputs(self, batch: dict[str, Any], size: tuple[int, int]) -> dict[str, Tensor]:
        """The batch's conditions as keyword arguments of :meth:`forward`.

        Args:
            batch: the training batch.
            size: the images' (height, width).

        Returns:
            Keyword arguments (none here: text only).
        """
        return {}

    def foreground(self, batch: dict[str, Any]) -> Tensor | None:
        """Float [B, 1, H, W] weights of the pixels the local loss counts (``mask > 0``)."""
        mask = batch.get('mask')
        return None if mask is None else (mask > 0).float().unsqueeze(1)

    def _prompts(self, prompts: list[str], generator: torch.Generator | None) -> list[str]:
        """The prompts with ``prompt_dropout`` applied (training only)."""
        if not self.training:
            return prompts
        return drop_prompts(prompts, self.hparams['prompt_dropout'], generator)

    def diffusion_loss(
        self, batch: dict[str, Any], generator: torch.Generator | None = None
    ) -> Tensor:
        """Global epsilon/v MSE (min-SNR weighted if set) plus the optional local term.

        Args:
            batch: ``image`` [B,3,H,W] 0..255, ``prompt`` list, and the family's conditions.
            generator: CPU generator for reproducible noise (validation).

        Returns:
            The scalar loss.
        """
        hp = self.hparams
        images = batch['image'] / 127.5 - 1
        with torch.no_grad():
            mean, std = self._posterior(images)
        latents = mean + std * self._randn(mean, generator)  # DiagonalGaussian's sample()
        # in the module's dtype, not a bfloat16 frozen VAE's (cast_frozen_for_precision)
        latents = latents.detach().to(self.latent_scale.dtype) * self.latent_scale
        noise = self._randn(latents, generator)
        steps = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, steps, (len(latents),), generator=generator).to(self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        text = self.prompt_encoder(self._prompts(list(batch['prompt']), generator))
        conditions = self.condition_inputs(batch, (images.shape[-2], images.shape[-1]))
        pred = self(
            noisy,
            timesteps,
            text.to(noisy.dtype),
            **{k: v.to(noisy.dtype) for k, v in conditions.items()},
        )
        target = prediction_target(self.noise_scheduler, latents, noise, timesteps)
        gamma = hp['snr_gamma']
        weight = None if gamma is None else min_snr_weight(self.noise_scheduler, timesteps, gamma)
        local_weight = hp['local_loss_weight']
        foreground = self.foreground(batch) if local_weight > 0 else None
        return denoising_loss(pred, target, weight, foreground, local_weight)

    def _posterior(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """The frozen VAE posterior's mean and std, through the latent cache when it is on."""
        size = self.hparams.get('latent_cache', 0)
        if not size or self.vae_trainable:
            self.latent_cache = None  # never held while the VAE trains
            return self._encode(images)
        if self.latent_cache is None:
            self.latent_cache = LatentCache(size)
        return self.latent_cache.posterior(images, self._encode, tag=str(self.vae.dtype))

    def _encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        # contiguous: the encoder may return channels-last views, and randn_like follows the
        # layout, so cached (stacked) and fresh posteriors would draw different noise
        posterior = self.vae.encode(images).latent_dist
        return posterior.mean.contiguous(), posterior.std.contiguous()

    def _randn(self, like: Tensor, generator: torch.Generator | None) -> Tensor:
        if generator is None:
            return torch.randn_like(like)
        return torch.randn(like.shape, generator=generator).to(like)

    def _vae_loss(self, batch: dict[str, Any]) -> Tensor:
        images = batch['image'] / 127.5 - 1
        posterior = self.vae.encode(images).latent_dist
        recon = self.vae.decode(posterior.sample()).sample
        kl = posterior.kl().mean() / images[0].numel()
        std = posterior.mean.detach().std()
        self.latent_std_ema.copy_(
            std if self.latent_std_ema == 0 else 0.9 * self.latent_std_ema + 0.1 * std
        )
        kl_weight = self.hparams.get('vae_kl_weight', 1e-3)
        loss: Tensor = F.mse_loss(recon, images) + kl_weight * kl
        return loss

    # ------------------------------------------------------------------ steps
    def training_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> Tensor:
        """One training step: VAE warm-up (tiny preset) or the diffusion loss."""
        batch_size = len(batch['image'])
        if self.vae_trainable and self.global_step < self.hparams['vae_warmup_steps']:
            loss = self._vae_loss(batch)
            self._diffusion_stepped = False
            self.log('vae_loss', loss, prog_bar=True, batch_size=batch_size)
            return loss
        if self.vae_trainable:  # warm-up over: freeze the VAE, fix the latent scale
            self._freeze_vae()
            self.latent_scale.copy_(1.0 / self.latent_std_ema.clamp(min=1e-3))
        loss = self.diffusion_loss(batch)
        self._diffusion_stepped = True  # the EMA follows this optimizer step
        self.log('train_loss', loss, prog_bar=True, batch_size=batch_size)
        if self.latent_cache is not None:
            self.log('latent_cache_hits', float(self.latent_cache.hits), batch_size=batch_size)
            self.log('latent_cache_misses', float(self.latent_cache.misses), batch_size=batch_size)
        return loss

    def on_train_start(self) -> None:
        """Resumed: continue every random stream where the checkpoint left it.

        After the sanity check, so that check draws nothing from them.
        """
        state, self._resumed_rng_states = self._resumed_rng_states, None
        if state is not None:
            restore_rng_states(self.trainer, state)

    def on_fit_start(self) -> None:
        """Move the EMA shadow weights to the module's device; frozen parts to bf16."""
        if self.ema is not None:
            self.ema.to(self.device)
        self.cast_frozen_for_precision(str(self.trainer.precision))
        if self.vae_trainable and self.global_step >= self.hparams['vae_warmup_steps']:
            self._freeze_vae()  # resumed after the warm-up

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: Any,
        optimizer_closure: Callable[[], Any] | None = None,
    ) -> None:
        """Step the optimizer, then the EMA of the trained weights (not in the VAE warm-up).

        Lightning calls this once per optimizer step, after all accumulated micro-batches.
        """
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.ema is not None and self._diffusion_stepped:
            self.ema.step(self.trained_parameters())
        self._diffusion_stepped = False

    def validation_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Validation loss with fixed noise, and a sample grid from the first batch."""
        generator = torch.Generator().manual_seed(self.hparams['seed'] + batch_idx)
        with self.ema_weights():
            loss = self.diffusion_loss(batch, generator)
            self.log('val_loss', loss, sync_dist=True, batch_size=len(batch['image']))
            if batch_idx == 0 and self.hparams['val_num_samples'] > 0:
                self._log_samples(batch)

    def predict_seeds(self, batch: dict[str, Any], batch_idx: int, count: int) -> Tensor:
        """One seed per generated sample: ``batch['seed']`` when given, else derived.

        Derived seeds come from ``seed``, the distributed rank and the batch index
        (:func:`~torchgeo_earthsynth.seeding.sample_seeds`), so a short last batch or
        another DDP rank never reuses a seed.

        Args:
            batch: the prediction batch.
            batch_idx: its index in this rank's loader.
            count: samples in the batch.

        Returns:
            int64 [count] seeds.
        """
        given = batch.get('seed')
        if given is not None:
            return torch.as_tensor(given)
        seeds: Tensor = sample_seeds(self.hparams['seed'], batch_idx, count)
        return seeds

    def sample_figure(self, batch: dict[str, Any], count: int) -> Figure:
        """A figure of ``count`` samples generated for the batch's first conditions.

        Raises:
            NotImplementedError: in the base; each family draws its own.
        """
        raise NotImplementedError(f'{type(self).__name__} does not draw validation samples')

    def _log_samples(self, batch: dict[str, Any]) -> None:
        if self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        n = min(self.hparams['val_num_samples'], len(batch['image']))
        log_figure(self, self.sample_figure(batch, n), 'val/samples')

    # ------------------------------------------------------------------ optim
    def _clips_under_amp(self) -> bool:
        """Whether the Trainer clips gradients under ``16-mixed``/``bf16-mixed``."""
        trainer = self._trainer
        if trainer is None:
            return False
        clipping = bool(trainer.gradient_clip_val)
        return clipping and isinstance(trainer.precision_plugin, MixedPrecision)

    def configure_optimizers(self) -> Any:
        """AdamW over what trains (the family's networks, the VAE in the tiny warm-up)."""
        groups: list[dict[str, Any]] = [{'params': self.trained_parameters()}]
        if self.hparams['preset'] == 'tiny' and self.hparams['vae_warmup_steps'] > 0:
            # kept after the warm-up (frozen params get no grads) so resumed states match
            groups.append({'params': list(self.vae.parameters()), 'weight_decay': 0.0})
        params = [p for group in groups for p in group['params']]
        # The fused kernel is ~3x faster than foreach on CPU; plain tensors only (not FSDP's).
        # Lightning refuses to clip the gradients of a fused optimizer under mixed precision.
        fused = not self._clips_under_amp() and all(
            type(p) is torch.nn.Parameter and p.device.type in ('cpu', 'cuda') for p in params
        )
        optimizer = AdamW(
            groups,
            lr=self.hparams['lr'],
            weight_decay=self.hparams['weight_decay'],
            fused=fused or None,
        )
        warmup = max(1, self.hparams['lr_warmup_steps'])
        scheduler = LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {
            'optimizer': optimizer,
            'lr_scheduler': {'scheduler': scheduler, 'interval': 'step'},
        }
