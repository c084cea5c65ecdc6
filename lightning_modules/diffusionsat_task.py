# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""DiffusionSat: a text + metadata conditioned UNet fine-tuned on Stable Diffusion, as a task."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from matplotlib.figure import Figure
from torch import Tensor

from torchgeo_earthsynth.families.pipelines import build_text_pipeline
from torchgeo_earthsynth.models import (
    SD21_ID,
    DiffusionParts,
    DiffusionSatUNet,
    load_diffusionsat_unet,
    normalize_metadata,
)
from torchgeo_earthsynth.synthesis.synthesizer import Synthesizer

from .diffusion_task import DiffusionTask
from .figures import sample_grid

__all__ = ('DiffusionSatTask', 'training_metadata')


def training_metadata(batch: dict[str, Any], dropout: float, task: str) -> Tensor:
    """A batch's metadata, normalised as DiffusionSat's, each field dropped to 0 with ``dropout``.

    Args:
        batch: a training batch with ``metadata`` float32 [B, 7] in physical units (NaN
            where unknown: normalised to 0, DiffusionSat's value for a missing field).
        dropout: probability of dropping each field of each sample (0 outside training).
        task: the task's name, for the error message.

    Returns:
        float32 [B, 7] normalised metadata.

    Raises:
        ValueError: if the batch has no ``metadata``.
    """
    if 'metadata' not in batch:
        raise ValueError(
            f'{task} needs batches with metadata [B, 7] (lon, lat, gsd, cloud_cover, year, '
            'month, day; NaN where unknown)'
        )
    metadata: Tensor = normalize_metadata(batch['metadata'])
    if dropout > 0:
        metadata = metadata * (torch.rand(metadata.shape, device=metadata.device) >= dropout)
    return metadata


class DiffusionSatTask(DiffusionTask):
    """Fine-tune a UNet with DiffusionSat's metadata embeddings on text + metadata.

    DiffusionSat's recipe by default: v-prediction, min-SNR 5, EMA, each metadata field
    dropped to 0 (its unconditional value) with probability 0.1. Batches carry ``image``,
    ``prompt`` and ``metadata`` float32 [B, 7] in physical units (NaN where unknown, as
    :class:`~torchgeo_earthsynth.datasets.EarthSynth180K` returns it); the metadata is
    normalised as DiffusionSat's (:func:`~torchgeo_earthsynth.models.normalize_metadata`).
    The ``tiny`` preset builds every part in code; ``pretrained`` loads SD 2.1 (or
    ``base_model``) and adds fresh metadata embeddings, or starts from a DiffusionSat UNet
    folder (``unet``). The export loads with ``Synthesizer.from_pretrained``.

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        preset: Literal['tiny', 'pretrained'] = 'tiny',
        base_model: str = SD21_ID,
        unet: str | None = None,
        image_size: int = 64,
        prediction_type: Literal['epsilon', 'v_prediction'] | None = 'v_prediction',
        metadata_dropout: float = 0.1,
        train_unet: bool = True,
        lr: float = 2e-5,
        weight_decay: float = 1e-2,
        lr_warmup_steps: int = 0,
        prompt_dropout: float = 0.1,
        snr_gamma: float | None = 5.0,
        local_loss_weight: float = 0.0,
        ema_decay: float | None = 0.9999,
        prompt_cache: bool = True,
        latent_cache: int = 0,
        gradient_checkpointing: bool = False,
        vae_warmup_steps: int = 0,
        tiny_vae_downscale: int = 2,
        val_num_samples: int = 8,
        val_inference_steps: int = 20,
        val_guidance_scale: float = 3.0,
        predict_inference_steps: int = 20,
        predict_guidance_scale: float = 3.0,
        seed: int = 0,
    ) -> None:
        """Initialize a new DiffusionSatTask instance.

        Args:
            preset: ``tiny`` (small parts built in code) or ``pretrained`` (SD base).
            base_model: hub id or local folder of the SD base (``pretrained`` preset).
            unet: a DiffusionSat UNet folder to start from (their ``checkpoint-N/unet`` or
                our export's ``unet/``); None adds fresh metadata embeddings to the base UNet.
            image_size: training image size of the tiny preset.
            prediction_type: ``epsilon`` or ``v_prediction`` (None: the scheduler's).
            metadata_dropout: probability each metadata field is dropped to 0.
            train_unet: train the UNet with its metadata embeddings (DiffusionSat's recipe;
                False trains nothing and only makes sense to validate or predict).
            lr: learning rate (AdamW).
            weight_decay: AdamW weight decay.
            lr_warmup_steps: linear learning-rate warm-up steps.
            prompt_dropout: probability of an empty prompt (classifier-free guidance).
            snr_gamma: min-SNR loss weighting gamma (None: off).
            local_loss_weight: weight of the extra loss on ``mask > 0`` pixels (batches
                with masks only).
            ema_decay: keep an EMA of the UNet (used to validate and export).
            prompt_cache: cache prompt embeddings (the text encoder is frozen).
            latent_cache: cache the frozen VAE's posteriors of up to this many images
                (0: off; see :class:`~.diffusion_task.DiffusionTask`).
            gradient_checkpointing: trade compute for memory in the UNet.
            vae_warmup_steps: tiny preset only: first fit the random VAE on reconstruction
                for this many steps, then freeze it.
            tiny_vae_downscale: tiny preset only: the VAE's downscale factor, 2 (latents
                half the image size) or 1 (latents at image size: the VAE keeps colour and
                texture that a 2x VAE warmed up briefly averages away).
            val_num_samples: validation samples generated and logged as a grid.
            val_inference_steps: sampler steps for validation samples.
            val_guidance_scale: guidance scale for validation samples.
            predict_inference_steps: sampler steps in :meth:`predict_step`.
            predict_guidance_scale: guidance scale in :meth:`predict_step`.
            seed: initialisation and sampling seed.

        Raises:
            ValueError: if ``metadata_dropout`` is not in [0, 1].
        """
        if not 0 <= metadata_dropout <= 1:
            raise ValueError(f'metadata_dropout must be in [0, 1], got {metadata_dropout}')
        # ``unet`` and ``metadata_dropout`` reach self.hparams with the base's arguments.
        super().__init__(
            preset=preset,
            base_model=base_model,
            image_size=image_size,
            prediction_type=prediction_type,
            train_unet=train_unet,
            lr=lr,
            weight_decay=weight_decay,
            lr_warmup_steps=lr_warmup_steps,
            prompt_dropout=prompt_dropout,
            snr_gamma=snr_gamma,
            local_loss_weight=local_loss_weight,
            ema_decay=ema_decay,
            prompt_cache=prompt_cache,
            latent_cache=latent_cache,
            gradient_checkpointing=gradient_checkpointing,
            vae_warmup_steps=vae_warmup_steps,
            tiny_vae_downscale=tiny_vae_downscale,
            val_num_samples=val_num_samples,
            val_inference_steps=val_inference_steps,
            val_guidance_scale=val_guidance_scale,
            predict_inference_steps=predict_inference_steps,
            predict_guidance_scale=predict_guidance_scale,
            seed=seed,
        )

    # ------------------------------------------------------------------ models
    def build_parts(self) -> DiffusionParts:
        """The base parts with a metadata UNet: ``unet``'s, or the base's + new embeddings."""
        parts = super().build_parts()
        if self.hparams['unet'] is not None:
            parts.unet = load_diffusionsat_unet(self.hparams['unet'])
        else:
            torch.manual_seed(self.hparams['seed'] + 100)
            parts.unet = DiffusionSatUNet.from_unet(parts.unet)
        return parts

    def condition_inputs(self, batch: dict[str, Any], size: tuple[int, int]) -> dict[str, Tensor]:
        """The batch's normalised metadata, each field dropped to 0 with ``metadata_dropout``.

        Raises:
            ValueError: if the batch has no ``metadata``.
        """
        dropout = self.hparams['metadata_dropout'] if self.training else 0.0
        return {'metadata': training_metadata(batch, dropout, type(self).__name__)}

    # ------------------------------------------------------------------ generation
    def synthesizer(self, num_inference_steps: int, guidance_scale: float) -> Synthesizer:
        """A :class:`Synthesizer` over this module's current weights and prompt cache."""
        return Synthesizer(
            build_text_pipeline(self.parts),
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            prompt_encoder=self.prompt_encoder,
        )

    def sample_figure(self, batch: dict[str, Any], count: int) -> Figure:
        """Mask (where the batch has one) | generated | real rows for the first samples."""
        synth = self.synthesizer(
            self.hparams['val_inference_steps'], self.hparams['val_guidance_scale']
        )
        prompts = list(batch['prompt'][:count])
        generated = synth.generate(
            None, prompts, seeds=range(len(prompts)), metadata=batch['metadata'][:count]
        )
        if 'mask' in batch:
            masks = batch['mask'][:count]
        else:  # the grid's first column shows background
            masks = torch.zeros(len(generated), *generated.shape[-2:], dtype=torch.long)
        return sample_grid(
            masks, generated, batch['image'][:count], prompts, title=f'step {self.global_step}'
        )

    def predict_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Any]:
        """Synthesise an image per (prompt, metadata); seeds from ``batch['seed']`` if any."""
        prompts = list(batch['prompt'])
        seeds = batch.get('seed')
        if seeds is None:
            start = self.hparams['seed'] * 1_000_003 + batch_idx * len(prompts)
            seeds = torch.arange(start, start + len(prompts))
        with self.ema_weights():
            synth = self.synthesizer(
                self.hparams['predict_inference_steps'], self.hparams['predict_guidance_scale']
            )
            images = synth.generate(None, prompts, seeds=seeds, metadata=batch['metadata'])
        return {
            **{k: v for k, v in batch.items() if k != 'image'},
            'image': images,
            'prompt': prompts,
            'source': ['synthetic'] * len(prompts),
            'seed': torch.as_tensor(seeds),
        }

    # ------------------------------------------------------------------ export
    def write_export(self, directory: Path, full_pipeline: bool) -> None:
        """The whole text + metadata pipeline, or only ``unet/``."""
        if full_pipeline:
            build_text_pipeline(self.parts).save_pretrained(directory)
        else:
            self.unet.save_pretrained(directory / 'unet')

    def export_metadata(self) -> dict[str, Any]:
        """The metadata normalisation, and the base fields."""
        return {
            **super().export_metadata(),
            'metadata': 'lon, lat, gsd, cloud_cover, year, month, day; DiffusionSat normalisation',
        }
