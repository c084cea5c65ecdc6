# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Super-resolution: a ControlNet conditioned on a low-res stack of any band count, as a task."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from diffusers import ControlNetModel
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from torch import Tensor

from torchgeo_earthsynth.degradation import RGB_BANDS, upsample
from torchgeo_earthsynth.families.pipelines import build_pipeline
from torchgeo_earthsynth.families.superres import condition_size
from torchgeo_earthsynth.models import (
    SD15_ID,
    DiffusionSatControlNet,
    LowResControlNetPipeline,
    find_diffusionsat_controlnet,
    load_diffusionsat_controlnet,
)
from torchgeo_earthsynth.synthesis.superres import super_resolve
from torchgeo_earthsynth.synthesis.synthesizer import Synthesizer

from .diffusion_task import DiffusionTask
from .earthsynth_controlnet import (
    _EMBEDDING_CHANNELS,
    EarthSynthControlNet,
)

__all__ = ('SuperResolutionTask',)


class SuperResolutionTask(EarthSynthControlNet):
    """Train a super-resolution ControlNet: low-res stack (any band count) + prompt -> RGB.

    DiffusionSat's super-resolution ControlNet
    (:class:`~torchgeo_earthsynth.models.DiffusionSatControlNet`, their config fields and
    weight names) with ``low_res_channels`` condition channels, copied from the UNet. The
    batch's ``low_res`` [B, C, h, w] (0..255) is scaled to [0, 1] and resized bicubically
    to the output size (our ControlNets; a DiffusionSat one given as ``controlnet`` takes it
    at its own ``conditioning_scale``); ``image`` [B, 3, H, W] is the target. The shared
    science (noise, targets, min-SNR, prompt dropout, EMA, checkpoints) is
    :class:`DiffusionTask`'s and the forward pass :class:`EarthSynthControlNet`'s. The full
    export loads with ``Synthesizer.from_pretrained``; generate with
    :func:`~torchgeo_earthsynth.families.super_resolve`.

    .. versionadded:: 0.3
    """

    def __init__(
        self,
        preset: Literal['tiny', 'pretrained'] = 'tiny',
        base_model: str = SD15_ID,
        controlnet: str | None = None,
        low_res_channels: int = 10,
        scale: int = 2,
        image_size: int = 64,
        prediction_type: Literal['epsilon', 'v_prediction'] | None = None,
        train_unet: bool | None = None,
        lr: float = 1e-4,
        weight_decay: float = 1e-2,
        lr_warmup_steps: int = 0,
        prompt_dropout: float = 0.1,
        snr_gamma: float | None = None,
        ema_decay: float | None = None,
        prompt_cache: bool = True,
        latent_cache: int = 0,
        gradient_checkpointing: bool = False,
        vae_warmup_steps: int = 0,
        val_num_samples: int = 8,
        val_inference_steps: int = 20,
        val_guidance_scale: float = 1.0,
        predict_inference_steps: int = 20,
        predict_guidance_scale: float = 1.0,
        seed: int | None = None,
    ) -> None:
        """Initialize a new SuperResolutionTask instance.

        Args:
            preset: ``tiny`` (small parts built in code) or ``pretrained`` (SD base).
            base_model: hub id or local folder of the SD base (``pretrained`` preset).
            controlnet: a ControlNet folder in DiffusionSat's layout to start from (our
                export's ``controlnet/``, or their release folder); None copies the UNet.
            low_res_channels: bands of ``low_res`` (10 for Sentinel-2's, 3 for RGB).
            scale: output / low-res size (recorded in the export; batches set the sizes).
            image_size: training image size of the tiny preset.
            prediction_type: ``epsilon`` or ``v_prediction`` (default: the scheduler's).
            train_unet: also train the UNet (default: only in the tiny preset).
            lr: learning rate (AdamW).
            weight_decay: AdamW weight decay.
            lr_warmup_steps: linear learning-rate warm-up steps.
            prompt_dropout: probability of an empty prompt (classifier-free guidance).
            snr_gamma: min-SNR loss weighting gamma (None: off).
            ema_decay: keep an EMA of the trained weights (used to validate and export).
            prompt_cache: cache prompt embeddings (the text encoder is frozen).
            latent_cache: cache the frozen VAE's posteriors of up to this many images
                (0: off; see :class:`~.diffusion_task.DiffusionTask`).
            gradient_checkpointing: trade compute for memory in the trained networks.
            vae_warmup_steps: tiny preset only: first fit the random VAE on reconstruction
                for this many steps, then freeze it.
            val_num_samples: validation pairs super-resolved and logged as a grid.
            val_inference_steps: UniPC steps for validation samples.
            val_guidance_scale: guidance scale for validation samples (1: the low-res
                image, not the prompt, carries the content).
            predict_inference_steps: UniPC steps in :meth:`predict_step`.
            predict_guidance_scale: guidance scale in :meth:`predict_step`.
            seed: initialisation and sampling seed (None: the run's ``seed_everything``,
                else 0).

        Raises:
            ValueError: if ``low_res_channels`` or ``scale`` is below 1.
        """
        if low_res_channels < 1 or scale < 1:
            raise ValueError(
                f'low_res_channels and scale must be >= 1, got {low_res_channels} and {scale}'
            )
        # ``low_res_channels`` and ``scale`` reach self.hparams with the base's arguments.
        super().__init__(
            preset=preset,
            base_model=base_model,
            controlnet=controlnet,
            image_size=image_size,
            prediction_type=prediction_type,
            train_unet=train_unet,
            lr=lr,
            weight_decay=weight_decay,
            lr_warmup_steps=lr_warmup_steps,
            prompt_dropout=prompt_dropout,
            snr_gamma=snr_gamma,
            ema_decay=ema_decay,
            prompt_cache=prompt_cache,
            latent_cache=latent_cache,
            gradient_checkpointing=gradient_checkpointing,
            vae_warmup_steps=vae_warmup_steps,
            val_num_samples=val_num_samples,
            val_inference_steps=val_inference_steps,
            val_guidance_scale=val_guidance_scale,
            predict_inference_steps=predict_inference_steps,
            predict_guidance_scale=predict_guidance_scale,
            seed=seed,
        )
        # LightningCLI records only this signature's arguments: no local (foreground) loss
        self.hparams.setdefault('local_loss_weight', 0.0)

    # ------------------------------------------------------------------ models
    def configure_condition_models(self) -> None:
        """Load a DiffusionSat-layout ControlNet, or copy one from the UNet (no metadata).

        Raises:
            ValueError: if a loaded ControlNet takes another band count.
        """
        hp = self.hparams
        channels = hp['low_res_channels']
        if hp['controlnet']:
            folder = find_diffusionsat_controlnet(hp['controlnet']) or hp['controlnet']
            self.controlnet: ControlNetModel = load_diffusionsat_controlnet(folder)
            if self.controlnet.config.conditioning_in_channels != channels:
                raise ValueError(
                    f'{folder}: the ControlNet takes '
                    f'{self.controlnet.config.conditioning_in_channels} bands, '
                    f'low_res_channels is {channels}'
                )
            return
        levels = len(self.vae.config.block_out_channels)
        copied = ControlNetModel.from_unet(
            self.unet,
            conditioning_embedding_out_channels=_EMBEDDING_CHANNELS[:levels],
            conditioning_channels=channels,
        )
        config = {k: v for k, v in copied.config.items() if not k.startswith('_')}
        model = DiffusionSatControlNet(**config, use_metadata=False)
        model.load_state_dict(copied.state_dict())
        self.controlnet = model

    def synthesizer(self, num_inference_steps: int, guidance_scale: float) -> Synthesizer:
        """A :class:`Synthesizer` (it takes ``low_res``) over this module's current weights."""
        return Synthesizer(
            build_pipeline(self.parts, self.controlnet, LowResControlNetPipeline),
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            prompt_encoder=self.prompt_encoder,
        )

    def condition_inputs(self, batch: dict[str, Any], size: tuple[int, int]) -> dict[str, Tensor]:
        """``low_res`` / 255, resized bicubically to the size the ControlNet takes.

        Raises:
            ValueError: if the batch has no ``low_res`` with ``low_res_channels`` bands.
        """
        channels = self.hparams['low_res_channels']
        low_res = batch.get('low_res')
        if low_res is None or low_res.ndim != 4 or low_res.shape[1] != channels:
            got = None if low_res is None else list(low_res.shape)
            raise ValueError(
                f'SuperResolutionTask needs batches with low_res [B, {channels}, h, w] '
                f'(0..255), got {got}'
            )
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        cond_size = condition_size(self.controlnet, factor, *size)
        return {'condition': upsample(low_res, cond_size) / 255}

    def foreground(self, batch: dict[str, Any]) -> Tensor | None:
        """No local loss: every pixel of a super-resolved image counts the same."""
        return None

    # ------------------------------------------------------------------ generation
    def _scale(self, low_res: Tensor, image: Tensor | None) -> int:
        if image is not None:
            return int(image.shape[-1]) // int(low_res.shape[-1])
        return int(self.hparams['scale'])

    def sample_figure(self, batch: dict[str, Any], count: int) -> Figure:
        """Low-res RGB | super-resolved | real columns for the batch's first pairs."""
        low_res, real = batch['low_res'][:count], batch['image'][:count]
        prompts = list(batch['prompt'][:count])
        synth = self.synthesizer(
            self.hparams['val_inference_steps'], self.hparams['val_guidance_scale']
        )
        generated = super_resolve(synth, low_res, prompts, self._scale(low_res, real))
        nearest = upsample(low_res[:, list(RGB_BANDS)], tuple(real.shape[-2:]), 'nearest')
        fig, axes = plt.subplots(len(real), 3, figsize=(6, 2 * len(real)), squeeze=False)
        for row, images in enumerate(zip(nearest, generated, real)):
            for ax, image, title in zip(axes[row], images, ('low-res', 'super-resolved', 'real')):
                ax.imshow((image.detach().cpu().permute(1, 2, 0) / 255).clamp(0, 1).numpy())
                ax.axis('off')
                if row == 0:
                    ax.set_title(title)
        fig.suptitle(f'step {self.global_step}')
        return fig

    def predict_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Any]:
        """Super-resolve each ``low_res``; seeds from ``batch['seed']`` or derived."""
        low_res, prompts = batch['low_res'], list(batch['prompt'])
        seeds = self.predict_seeds(batch, batch_idx, len(prompts))
        with self.ema_weights():
            synth = self.synthesizer(
                self.hparams['predict_inference_steps'], self.hparams['predict_guidance_scale']
            )
            images = super_resolve(
                synth, low_res, prompts, self._scale(low_res, batch.get('image')), seeds
            )
        return {
            **{k: v for k, v in batch.items() if k != 'image'},
            'image': images,
            'prompt': prompts,
            'source': ['synthetic'] * len(prompts),
            'seed': seeds,
        }

    # ------------------------------------------------------------------ export
    def write_export(self, directory: Path, full_pipeline: bool) -> None:
        """The whole ``LowResControlNetPipeline`` or only ``controlnet/``."""
        if full_pipeline:
            pipeline = build_pipeline(self.parts, self.controlnet, LowResControlNetPipeline)
            pipeline.save_pretrained(directory)
        else:
            self.controlnet.save_pretrained(directory / 'controlnet')

    def export_metadata(self) -> dict[str, Any]:
        """The low-res bands and scale, and the base fields."""
        meta = DiffusionTask.export_metadata(self)  # not the mask family's fields
        return {
            **meta,
            'task': 'super-resolution',
            'low_res_channels': self.hparams['low_res_channels'],
            'scale': self.hparams['scale'],
            'condition': 'low_res / 255 (0..255 bands), bicubic to the output size',
        }

    def model_card(self, meta: dict[str, Any], full_pipeline: bool) -> str:
        """A model card that says how to load and call the export."""
        return (
            '---\nlibrary_name: diffusers\ntags: [controlnet, super-resolution, '
            'remote-sensing]\n---\n'
            '# Super-resolution ControlNet (torchgeo-earthsynth export)\n\n'
            f'- preset: `{meta["preset"]}`, trained steps: {meta["global_step"]}\n'
            f'- condition: {meta["low_res_channels"]} low-res bands, x{meta["scale"]}\n\n'
            '```python\nfrom torchgeo_earthsynth.synthesis import super_resolve\n'
            'from torchgeo_earthsynth.synthesis.synthesizer import Synthesizer\n\n'
            "synth = Synthesizer.from_pretrained('<this folder>', guidance_scale=1.0)\n"
            f'images = super_resolve(synth, low_res, prompts, scale={meta["scale"]})\n```\n'
        )

    def save_pretrained(self, directory: str | Path, full_pipeline: bool | None = None) -> Path:
        """Export in diffusers format (safetensors), atomically, with a model card.

        Args:
            directory: output folder (replaced as a whole when it exists).
            full_pipeline: the whole pipeline (default for the tiny preset) or ``controlnet/``.

        Returns:
            The export folder (``Synthesizer.from_pretrained(directory)`` loads a full one).
        """
        return super().save_pretrained(directory, full_pipeline)
