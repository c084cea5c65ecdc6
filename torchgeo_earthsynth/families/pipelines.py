# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Pipelines over shared parts: a family's ControlNet or text pipeline, no module copied."""

from __future__ import annotations

from typing import Any

from diffusers import ControlNetModel, StableDiffusionControlNetPipeline, StableDiffusionPipeline


def build_pipeline(
    parts: Any,
    controlnet: ControlNetModel,
    pipeline_class: type[StableDiffusionControlNetPipeline] = StableDiffusionControlNetPipeline,
) -> StableDiffusionControlNetPipeline:
    """A ControlNet pipeline sharing (not copying) the given modules.

    ``pipeline_class`` :class:`~torchgeo_earthsynth.models.LowResControlNetPipeline` takes a
    low-res condition as given (super-resolution).
    """
    return pipeline_class(
        vae=parts.vae,
        text_encoder=parts.text_encoder,
        tokenizer=parts.tokenizer,
        unet=parts.unet,
        controlnet=controlnet,
        scheduler=parts.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_text_pipeline(parts: Any) -> StableDiffusionPipeline:
    """A text (+ metadata) pipeline sharing (not copying) the given modules."""
    return StableDiffusionPipeline(
        vae=parts.vae,
        text_encoder=parts.text_encoder,
        tokenizer=parts.tokenizer,
        unet=parts.unet,
        scheduler=parts.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


__all__ = ('build_pipeline', 'build_text_pipeline')
