# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""EarthSynth: a mask + text conditioned ControlNet on Stable Diffusion, as a TorchGeo task."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal

import torch
from diffusers import ControlNetModel
from matplotlib.figure import Figure
from torch import Tensor

from torchgeo_earthsynth.conditions import ConditionEncoding, encode_condition
from torchgeo_earthsynth.families.pipelines import build_pipeline
from torchgeo_earthsynth.models import SD15_ID, load_controlnet, tiny_controlnet
from torchgeo_earthsynth.synthesis.synthesizer import Synthesizer
from torchgeo_earthsynth.vocabulary import PROMPT_PREFIX, multi_hot

from .callbacks import AtomicCheckpointIO, DiffusersExport
from .diffusion_task import DiffusionTask
from .figures import output_dir, sample_grid

#: ControlNet condition-embedding channels of SD 1.5 (diffusers' default), one per VAE level.
_EMBEDDING_CHANNELS: Final = (16, 32, 96, 256)

# The callbacks lived here before lightning_modules/callbacks.py: kept importable from here.
__all__ = (
    'AtomicCheckpointIO',
    'DiffusersExport',
    'EarthSynthControlNet',
    'output_dir',
    'sample_grid',
)


class EarthSynthControlNet(DiffusionTask):
    """Train a ControlNet on a frozen Stable Diffusion base with mask + prompt conditions.

    The condition is the class-index mask (``id/255`` grey, as the released EarthSynth
    weights expect, or palette colours) and the prompt ``"A satellite image of ..."``.
    The ``tiny`` preset builds every part from small configs in code (nothing downloaded)
    and trains the UNet too; the ``pretrained`` preset loads SD 1.5 (hub id or folder) and
    trains only the ControlNet, initialised from the UNet or from released weights.

    The shared training science (noise, targets, min-SNR, prompt dropout, local loss, EMA,
    checkpoints, export) is :class:`DiffusionTask`'s; this family adds the ControlNet and
    the mask condition.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        preset: Literal['tiny', 'pretrained'] = 'tiny',
        base_model: str = SD15_ID,
        controlnet: str | None = None,
        controlnet_subfolder: str | None = None,
        image_size: int = 64,
        prediction_type: Literal['epsilon', 'v_prediction'] | None = None,
        condition_encoding: ConditionEncoding = 'grey',
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
        """Initialize a new EarthSynthControlNet instance.

        Args:
            preset: ``tiny`` (small parts built in code) or ``pretrained`` (SD base).
            base_model: hub id or local folder of the SD base (``pretrained`` preset).
            controlnet: hub id or folder of ControlNet weights to start from (e.g.
                ``jaychempan/EarthSynth`` with subfolder ``controlnet``, or our export);
                None copies the UNet (``ControlNetModel.from_unet``).
            controlnet_subfolder: subfolder of ``controlnet``.
            image_size: training image size of the tiny preset.
            prediction_type: ``epsilon`` or ``v_prediction`` (default: the scheduler's).
            condition_encoding: ``grey`` (released weights) or ``palette``.
            train_unet: also train the UNet (default: only in the tiny preset).
            lr: learning rate (AdamW).
            weight_decay: AdamW weight decay.
            lr_warmup_steps: linear learning-rate warm-up steps.
            prompt_dropout: probability of an empty prompt (classifier-free guidance).
            snr_gamma: min-SNR loss weighting gamma (None: off).
            local_loss_weight: weight of the extra loss on the mask's foreground pixels.
            ema_decay: keep an EMA of the trained weights (used to validate and export).
            prompt_cache: cache prompt embeddings (the text encoder is frozen).
            latent_cache: cache the frozen VAE's posteriors of up to this many images
                (0: off; see :class:`~.diffusion_task.DiffusionTask`).
            gradient_checkpointing: trade compute for memory in the trained networks.
            vae_warmup_steps: tiny preset only: first fit the random VAE on reconstruction
                for this many steps, then freeze it (nothing is pretrained there).
            tiny_vae_downscale: tiny preset only: the VAE's downscale factor, 2 (latents
                half the image size) or 1 (latents at image size, a three-level UNet, about
                1.2x the step cost: the VAE keeps a 32 px tile's fine texture).
            tiny_vae_width: tiny preset only: channels of the VAE's first block (see
                :class:`~.diffusion_task.DiffusionTask`).
            tiny_vae_layers: tiny preset only: ResNet layers per VAE block.
            vae_kl_weight: weight of the KL term in the VAE warm-up.
            val_num_samples: validation masks generated and logged as a grid.
            val_inference_steps: UniPC steps for validation samples.
            val_guidance_scale: guidance scale for validation samples (3.0 suits the tiny
                preset; configs/sd15.yaml uses 7.5, as upstream EarthSynth's test.py).
            predict_inference_steps: UniPC steps in :meth:`predict_step`.
            predict_guidance_scale: guidance scale in :meth:`predict_step` (3.0 for the tiny
                preset; 7.5 is :class:`Synthesizer`'s default for real weights).
            seed: initialisation and sampling seed (None: the run's ``seed_everything``,
                else 0).
        """
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
            tiny_vae_width=tiny_vae_width,
            tiny_vae_layers=tiny_vae_layers,
            vae_kl_weight=vae_kl_weight,
            val_num_samples=val_num_samples,
            val_inference_steps=val_inference_steps,
            val_guidance_scale=val_guidance_scale,
            predict_inference_steps=predict_inference_steps,
            predict_guidance_scale=predict_guidance_scale,
            seed=seed,
        )

    # ------------------------------------------------------------------ models
    def configure_condition_models(self) -> None:
        """Load the ControlNet, or copy it from the UNet."""
        hp = self.hparams
        if hp['controlnet']:
            self.controlnet: ControlNetModel = load_controlnet(
                hp['controlnet'], hp['controlnet_subfolder']
            )
        elif hp['preset'] == 'tiny':
            self.controlnet = tiny_controlnet(self.unet, self.tiny_vae_downscale)
        else:
            # The condition embedding downsamples as the base's VAE does (8x, SD's default
            # channels, for SD 1.5; fewer levels for a smaller VAE).
            levels = len(self.vae.config.block_out_channels)
            self.controlnet = ControlNetModel.from_unet(
                self.unet, conditioning_embedding_out_channels=_EMBEDDING_CHANNELS[:levels]
            )

    def trained_modules(self) -> list[torch.nn.Module]:
        """The ControlNet, and the UNet if ``train_unet``."""
        return [self.controlnet, *super().trained_modules()]

    def synthesizer(self, num_inference_steps: int, guidance_scale: float) -> Synthesizer:
        """A :class:`Synthesizer` over this module's current weights and prompt cache."""
        return Synthesizer(
            build_pipeline(self.parts, self.controlnet),
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            condition_encoding=self.hparams['condition_encoding'],
            prompt_encoder=self.prompt_encoder,
        )

    # ------------------------------------------------------------------ loss
    def forward(
        self,
        noisy: Tensor,
        timesteps: Tensor,
        text: Tensor,
        condition: Tensor | None = None,
        **conditions: Tensor,
    ) -> Tensor:
        """Predict noise (or v) of noisy latents given text embeddings and condition images.

        Raises:
            ValueError: without a ``condition`` image batch.
        """
        if condition is None:
            raise ValueError('EarthSynthControlNet needs a condition image batch [B, 3, H, W]')
        down, mid = self.controlnet(
            noisy,
            timesteps,
            encoder_hidden_states=text,
            controlnet_cond=condition,
            return_dict=False,
        )
        return self.controlled_unet(noisy, timesteps, text, down, mid, **conditions)

    def controlled_unet(
        self,
        noisy: Tensor,
        timesteps: Tensor,
        text: Tensor,
        down: Sequence[Tensor],
        mid: Tensor,
        **conditions: Any,
    ) -> Tensor:
        """The UNet's prediction with the ControlNet residuals ``down`` and ``mid`` added."""
        pred: Tensor = self.unet(
            noisy,
            timesteps,
            encoder_hidden_states=text,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
            return_dict=False,
            **conditions,
        )[0]
        return pred

    def condition_inputs(self, batch: dict[str, Any], size: tuple[int, int]) -> dict[str, Tensor]:
        """The mask's condition image (``grey`` or ``palette``) at the images' size."""
        return {
            'condition': encode_condition(batch['mask'], size, self.hparams['condition_encoding'])
        }

    def generation_inputs(self, batch: dict[str, Any], count: int) -> dict[str, Any]:
        """Further conditions of the batch's first ``count`` rows for generation (none here)."""
        return {}

    def generate_rows(
        self, synth: Synthesizer, batch: dict[str, Any], count: int, seeds: Sequence[int] | Tensor
    ) -> Tensor:
        """Generate for the batch's first ``count`` rows with the given seeds.

        From their masks (if ``synth`` takes masks), prompts and :meth:`generation_inputs`.
        """
        masks = batch['mask'][:count] if synth.takes('mask') else None
        images: Tensor = synth.generate(
            masks,
            list(batch['prompt'][:count]),
            seeds=seeds,
            **self.generation_inputs(batch, count),
        )
        return images

    # ------------------------------------------------------------------ steps
    def sample_figure(self, batch: dict[str, Any], count: int) -> Figure:
        """Condition | generated | real rows for the batch's first ``count`` masks."""
        synth = self.synthesizer(
            self.hparams['val_inference_steps'], self.hparams['val_guidance_scale']
        )
        masks, prompts = batch['mask'][:count], list(batch['prompt'][:count])
        generated = self.generate_rows(synth, batch, count, range(count))
        return sample_grid(
            masks, generated, batch['image'][:count], prompts, title=f'step {self.global_step}'
        )

    def predict_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Any]:
        """Synthesise an image per (mask, prompt); the mask stays the label.

        Seeds come from ``batch['seed']`` when present (reproducible whatever the rank or
        batch), else from ``seed``, the rank and the batch index (:meth:`predict_seeds`:
        unique across batches and ranks).
        """
        masks = batch['mask']
        prompts = list(batch['prompt'])
        seeds = self.predict_seeds(batch, batch_idx, len(masks))
        with self.ema_weights():
            synth = self.synthesizer(
                self.hparams['predict_inference_steps'], self.hparams['predict_guidance_scale']
            )
            images = self.generate_rows(synth, batch, len(masks), seeds)
        return {
            **{k: v for k, v in batch.items() if k not in ('image',)},
            'image': images,
            'mask': masks.long(),
            'prompt': prompts,
            'categories': torch.stack([multi_hot(m) for m in masks]),
            'source': ['synthetic'] * len(masks),
            'seed': seeds,
        }

    # ------------------------------------------------------------------ export
    def write_export(self, directory: Path, full_pipeline: bool) -> None:
        """The whole ``StableDiffusionControlNetPipeline`` or only ``controlnet/``."""
        if full_pipeline:
            build_pipeline(self.parts, self.controlnet).save_pretrained(directory)
        else:
            self.controlnet.save_pretrained(directory / 'controlnet')

    def export_metadata(self) -> dict[str, Any]:
        """The condition encoding and prompt template, and the base fields."""
        return {
            'condition_encoding': self.hparams['condition_encoding'],
            **super().export_metadata(),
            'prompt_template': PROMPT_PREFIX + '<class names, ascending id, comma-separated>',
        }

    def model_card(self, meta: dict[str, Any], full_pipeline: bool) -> str:
        """A diffusers model card that says how to load the export."""
        load = (
            "pipe = StableDiffusionControlNetPipeline.from_pretrained('<this folder>')"
            if full_pipeline
            else "controlnet = ControlNetModel.from_pretrained('<this folder>', "
            "subfolder='controlnet')\n"
            f"pipe = StableDiffusionControlNetPipeline.from_pretrained('{meta['base_model']}', "
            'controlnet=controlnet)'
        )
        return (
            '---\nlibrary_name: diffusers\ntags: [controlnet, remote-sensing, earthsynth]\n---\n'
            '# EarthSynth ControlNet (torchgeo-earthsynth export)\n\n'
            f'- preset: `{meta["preset"]}`, trained steps: {meta["global_step"]}, '
            f'EMA: {meta["ema"]}\n'
            f'- condition: class-index mask, `{meta["condition_encoding"]}` encoding '
            '(grey = id/255 in all three channels), image size of the mask\n'
            f'- prompt: `{meta["prompt_template"]}`\n\n'
            f'```python\nfrom diffusers import ControlNetModel, StableDiffusionControlNetPipeline\n'
            f'{load}\n```\n'
        )

    def save_pretrained(self, directory: str | Path, full_pipeline: bool | None = None) -> Path:
        """Export in diffusers format (safetensors), atomically, with a model card.

        Args:
            directory: output folder (replaced as a whole when it exists).
            full_pipeline: write the whole ``StableDiffusionControlNetPipeline`` (default for
                the tiny preset: the base exists nowhere else) or only ``controlnet/``.

        Returns:
            The export folder. Load it with
            ``StableDiffusionControlNetPipeline.from_pretrained(directory)`` (full) or
            ``ControlNetModel.from_pretrained(directory, subfolder='controlnet')``.
        """
        return super().save_pretrained(directory, full_pipeline)
