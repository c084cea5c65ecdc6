# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""ControlNet tasks whose UNet also takes a reference image (global content, an IP-Adapter)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

import torch
from torch import Tensor, nn
from transformers import CLIPVisionModelWithProjection

from torchgeo_earthsynth.families.pipelines import build_text_pipeline
from torchgeo_earthsynth.models import (
    IMAGE_ENCODER_FOLDER,
    IP_ADAPTER_WEIGHTS,
    DiffusionParts,
    add_global_content,
    encode_reference,
    ip_adapter_modules,
    load_global_content,
    save_ip_adapter,
    tiny_image_encoder,
    without_ip_adapter,
)
from torchgeo_earthsynth.synthesis.synthesizer import Synthesizer

from .earthsynth_controlnet import EarthSynthControlNet

__all__ = ('GlobalContentControlNet',)


class GlobalContentControlNet(EarthSynthControlNet):
    """:class:`EarthSynthControlNet` with an optional global content condition on the UNet.

    The networks' side of CRS-Diff's global content condition, through diffusers'
    IP-Adapter (:mod:`~torchgeo_earthsynth.models.global_content`): a frozen CLIP vision
    model encodes the reference, the UNet's IP-Adapter (image projection, image keys and
    values) trains, stays float32 beside a bfloat16 frozen base and in checkpoints that
    leave the base out; the export saves the UNet plain with ``ip_adapter.safetensors``
    (and ``image_encoder/`` in a full pipeline) beside it. A subclass reads the
    hyperparameters ``global_content``, ``reference_dropout`` and ``reference_encoder``,
    calls :meth:`configure_global_content` when it builds its networks, trains
    :meth:`adapter_modules`, adds :meth:`reference_inputs` to its condition inputs and
    :meth:`reference_kwargs` to its UNet call.

    .. versionadded:: 0.2
    """

    def configure_global_content(self) -> None:
        """The CLIP vision model and the UNet's IP-Adapter (the ``controlnet`` export's, if any).

        Call it from ``configure_condition_models`` after the ControlNets are copied from the
        UNet (they stay plain); nothing is added without ``global_content``.
        """
        hp = self.hparams
        self.reference_encoder: CLIPVisionModelWithProjection | None = None
        if not hp['global_content']:
            return
        parts = DiffusionParts(
            self.unet, self.vae, self.text_encoder, self.tokenizer, self.noise_scheduler
        )
        pipeline = build_text_pipeline(parts)  # diffusers' load_ip_adapter is a pipeline's
        export = Path(hp['controlnet']) if hp['controlnet'] else None
        if export is not None and (export / IP_ADAPTER_WEIGHTS).exists():
            load_global_content(pipeline, export, hp['reference_encoder'])
        else:
            encoder = (
                tiny_image_encoder(hp['seed'] + 3, hp['image_size'])
                if hp['preset'] == 'tiny'
                else CLIPVisionModelWithProjection.from_pretrained(hp['reference_encoder'])
            )
            add_global_content(pipeline, encoder, seed=hp['seed'])
        self.reference_encoder = pipeline.image_encoder.requires_grad_(False).eval()

    def adapter_modules(self) -> list[nn.Module]:
        """The IP-Adapter's trained layers (none without global content)."""
        return [] if self.reference_encoder is None else [ip_adapter_modules(self.unet)]

    def frozen_modules(self) -> list[nn.Module]:
        """The base's frozen networks and the CLIP vision model."""
        encoder = [] if self.reference_encoder is None else [self.reference_encoder]
        return [*super().frozen_modules(), *encoder]

    def cast_frozen_for_precision(self, precision: str) -> None:
        """Frozen networks to bfloat16 under ``bf16-mixed``; the IP-Adapter stays float32."""
        super().cast_frozen_for_precision(precision)
        if self.reference_encoder is not None:
            ip_adapter_modules(self.unet).float()

    def _frozen_prefixes(self) -> tuple[str, ...]:
        prefixes = super()._frozen_prefixes()
        return (*prefixes, 'reference_encoder.') if prefixes else prefixes

    def train(self, mode: bool = True) -> Self:
        """Set train mode, keeping the frozen parts (and the CLIP vision model) in eval mode."""
        super().train(mode)
        encoder = getattr(self, 'reference_encoder', None)
        if encoder is not None:
            encoder.eval()
        return self

    def reference_inputs(self, images: Tensor) -> Tensor:
        """The images' CLIP embeddings [B, D], dropped to zeros per sample in training."""
        assert self.reference_encoder is not None
        with torch.no_grad():
            embeds: Tensor = encode_reference(self.reference_encoder, images)
        dropout = self.hparams['reference_dropout'] if self.training else 0.0
        keep = torch.rand(len(embeds), 1, device=embeds.device) >= dropout
        return embeds * keep if dropout > 0 else embeds

    def reference_kwargs(self, reference: Tensor | None, noisy: Tensor) -> dict[str, Any]:
        """The UNet's ``added_cond_kwargs`` for ``reference`` [B, D] (None: zeros, dropped).

        Raises:
            ValueError: for a ``reference`` without ``global_content``.
        """
        if self.reference_encoder is None:
            if reference is not None:
                raise ValueError(
                    f'{type(self).__name__} takes a reference with global_content only'
                )
            return {}
        if reference is None:
            dim = self.reference_encoder.config.projection_dim
            reference = noisy.new_zeros(len(noisy), dim)
        return {'added_cond_kwargs': {'image_embeds': [reference[:, None]]}}

    def synthesizer(self, num_inference_steps: int, guidance_scale: float) -> Synthesizer:
        """:meth:`EarthSynthControlNet.synthesizer`, with the CLIP vision model if any."""
        synth = super().synthesizer(num_inference_steps, guidance_scale)
        if self.reference_encoder is not None:
            synth.pipeline.register_modules(image_encoder=self.reference_encoder)
        return synth

    # ------------------------------------------------------------------ export
    def write_export(self, directory: Path, full_pipeline: bool) -> None:
        """:meth:`EarthSynthControlNet.write_export`; with global content, the IP-Adapter too.

        The UNet is saved without it; ``ip_adapter.safetensors`` holds it as diffusers'
        ``load_ip_adapter`` reads it, and a full pipeline adds the CLIP vision model in
        ``image_encoder/``.
        """
        if self.reference_encoder is None:
            super().write_export(directory, full_pipeline)
            return
        with without_ip_adapter(self.unet):
            super().write_export(directory, full_pipeline)
        save_ip_adapter(self.unet, directory / IP_ADAPTER_WEIGHTS)
        if full_pipeline:
            self.reference_encoder.save_pretrained(directory / IMAGE_ENCODER_FOLDER)

    def export_metadata(self) -> dict[str, Any]:
        """The base fields; with global content, ``global_content`` and the CLIP model's id.

        ``reference_encoder`` names the CLIP vision model of an export without
        ``image_encoder/`` (the pretrained preset's).
        """
        meta = super().export_metadata()
        if self.reference_encoder is not None:
            meta['global_content'] = True
            if self.hparams['preset'] != 'tiny':
                meta['reference_encoder'] = self.hparams['reference_encoder']
        return meta
