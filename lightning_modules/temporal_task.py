# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Temporal generation as a task: earlier frames + their dates -> the image at a target date."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from torchgeo_earthsynth.families.pipelines import build_pipeline
from torchgeo_earthsynth.families.temporal import normalize_frame_metadata
from torchgeo_earthsynth.models import (
    TemporalControlNet,
    TemporalControlNetPipeline,
    controlnet_metadata,
    load_temporal_controlnet,
    temporal_controlnet_from_unet,
)
from torchgeo_earthsynth.synthesis.synthesizer import Synthesizer

from .diffusion_task import DiffusionTask
from .diffusionsat_task import training_metadata
from .earthsynth_controlnet import _EMBEDDING_CHANNELS, EarthSynthControlNet

__all__ = ('TemporalControlNetTask',)


class TemporalControlNetTask(EarthSynthControlNet):
    """Train DiffusionSat's temporal ControlNet: earlier frames and their metadata -> target.

    :class:`~torchgeo_earthsynth.models.TemporalControlNet` (their ``ControlNetModel3D``
    layout), copied from the UNet (or loaded from ``controlnet``, their release folder or our
    export). Batches carry ``frames`` [B, 3, T, H, W] (0..255, scaled to 0..1 as their
    pipeline gives them), ``frame_metadata`` [B, 7, T] and ``metadata`` [B, 7] (the target's
    date) in physical units, ``image`` (the target) and ``prompt``
    (:class:`~torchgeo_earthsynth.datamodules.EarthSynthMiniTemporalDataModule`); each
    metadata field is dropped to 0 with probability ``metadata_dropout``, as theirs. The
    export loads with ``Synthesizer.from_pretrained`` and generates from ``frames``.

    .. versionadded:: 0.4
    """

    def __init__(self, metadata_dropout: float = 0.1, **kwargs: Any) -> None:
        """Initialize a new TemporalControlNetTask instance.

        Args:
            metadata_dropout: probability each metadata field (target's and frames') is
                dropped to 0.
            **kwargs: :class:`EarthSynthControlNet`'s arguments (``condition_encoding`` is
                not used: the frames are the condition).

        Raises:
            ValueError: if ``metadata_dropout`` is not in [0, 1].
        """
        if not 0 <= metadata_dropout <= 1:
            raise ValueError(f'metadata_dropout must be in [0, 1], got {metadata_dropout}')
        super().__init__(**kwargs)
        self.hparams.setdefault('local_loss_weight', 0.0)

    def configure_condition_models(self) -> None:
        """Load a temporal ControlNet, or copy one from the UNet."""
        folder = self.hparams['controlnet']
        if folder:
            subfolder = 'controlnet' if (Path(folder) / 'controlnet').is_dir() else None
            self.controlnet: TemporalControlNet = load_temporal_controlnet(folder, subfolder)
            return
        levels = len(self.vae.config.block_out_channels)
        # theirs (8 heads x 64) at SD's width; a tiny UNet's first width otherwise
        width = self.unet.config.block_out_channels[0]
        first = (8, 64) if self.hparams['preset'] != 'tiny' else (max(1, width // 8), 8)
        self.controlnet = temporal_controlnet_from_unet(
            self.unet, _EMBEDDING_CHANNELS[:levels], first
        )

    def synthesizer(self, num_inference_steps: int, guidance_scale: float) -> Synthesizer:
        """A :class:`Synthesizer` (it takes ``frames``) over this module's current weights."""
        return Synthesizer(
            build_pipeline(self.parts, self.controlnet, TemporalControlNetPipeline),
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            prompt_encoder=self.prompt_encoder,
        )

    def forward(
        self,
        noisy: Tensor,
        timesteps: Tensor,
        text: Tensor,
        condition: Tensor | None = None,
        metadata: Tensor | None = None,
        frame_metadata: Tensor | None = None,
        **conditions: Tensor,
    ) -> Tensor:
        """:meth:`EarthSynthControlNet.forward` with the target's and the frames' metadata."""
        with controlnet_metadata(self.controlnet, metadata, frame_metadata):
            return super().forward(noisy, timesteps, text, condition, **conditions)

    def condition_inputs(self, batch: dict[str, Any], size: tuple[int, int]) -> dict[str, Tensor]:
        """The frames / 255 and the normalised metadata (fields dropped in training).

        Raises:
            ValueError: if the batch has no ``frames`` [B, 3, T, H, W] or no metadata.
        """
        frames = batch.get('frames')
        if frames is None or frames.ndim != 5 or tuple(frames.shape[-2:]) != tuple(size):
            got = None if frames is None else list(frames.shape)
            raise ValueError(
                f'TemporalControlNetTask needs batches with frames [B, 3, T, {size[0]}, '
                f'{size[1]}] (0..255), got {got}'
            )
        dropout = self.hparams['metadata_dropout'] if self.training else 0.0
        metadata = training_metadata(batch, dropout, type(self).__name__)
        history = normalize_frame_metadata(batch['frame_metadata'])
        if dropout > 0:
            history = history * (torch.rand(history.shape, device=history.device) >= dropout)
        return {'condition': frames / 255, 'metadata': metadata, 'frame_metadata': history}

    def foreground(self, batch: dict[str, Any]) -> Tensor | None:
        """No local loss: every pixel of the predicted date counts the same."""
        return None

    def generate_rows(
        self, synth: Synthesizer, batch: dict[str, Any], count: int, seeds: Sequence[int] | Tensor
    ) -> Tensor:
        """The batch's first ``count`` targets from their frames and dates."""
        request = {
            'prompt': list(batch['prompt'][:count]),
            'frames': batch['frames'][:count] / 255,
            'frame_metadata': batch['frame_metadata'][:count],
            'metadata': batch['metadata'][:count],
        }
        return synth.sample(request, seeds)

    def export_metadata(self) -> dict[str, Any]:
        """The task and its condition, and the base fields."""
        return {
            **DiffusionTask.export_metadata(self),
            'task': 'temporal',
            'condition': 'frames / 255 [B, 3, T, H, W] + frame_metadata [B, 7, T] + metadata',
        }

    def model_card(self, meta: dict[str, Any], full_pipeline: bool) -> str:
        """A model card that says how to load and call the export."""
        return (
            '---\nlibrary_name: diffusers\ntags: [controlnet, temporal, diffusionsat, '
            'remote-sensing]\n---\n'
            '# Temporal ControlNet (torchgeo-earthsynth export, DiffusionSat layout)\n\n'
            f'- preset: `{meta["preset"]}`, trained steps: {meta["global_step"]}\n'
            f'- condition: {meta["condition"]}\n\n'
            '```python\nfrom torchgeo_earthsynth.synthesis import Synthesizer\n\n'
            "synth = Synthesizer.from_pretrained('<this folder>', guidance_scale=1.0)\n"
            "images = synth.sample({'prompt': prompts, 'frames': frames / 255,\n"
            "                       'frame_metadata': frame_metadata, 'metadata': metadata})\n"
            '```\n'
        )

    def write_export(self, directory: Path, full_pipeline: bool) -> None:
        """The whole ``TemporalControlNetPipeline`` or only ``controlnet/``."""
        if full_pipeline:
            pipeline = build_pipeline(self.parts, self.controlnet, TemporalControlNetPipeline)
            pipeline.save_pretrained(directory)
        else:
            self.controlnet.save_pretrained(directory / 'controlnet')
