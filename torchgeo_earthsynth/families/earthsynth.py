# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""EarthSynth: a ControlNet steered by the class mask (+ the prompt); the condition image."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diffusers import StableDiffusionControlNetPipeline

from torchgeo_earthsynth.conditions import encode_condition
from torchgeo_earthsynth.families.base import BatchCall, GeneratorFamily, register
from torchgeo_earthsynth.models import NamedMultiControlNet


@register
class MaskControlNetFamily(GeneratorFamily):
    """A mask ControlNet (EarthSynth's, ours): ``mask`` -> the ControlNet's condition image.

    The mask becomes an image by the synthesizer's ``condition_encoding`` (``grey`` for
    the released EarthSynth weights), resized NEAREST to the output.
    """

    title = 'a mask ControlNet'

    def __init__(self, pipeline: Any, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(pipeline, settings)
        self.needs = self.accepts = frozenset({'mask'})

    @staticmethod
    def recognises(pipeline: Any) -> bool:
        """A ControlNet pipeline taking one image condition through diffusers' processor.

        Pipelines that take their condition as a tensor (super-resolution, temporal frames)
        override ``prepare_image``; multi-condition models have their own family.
        """
        return (
            isinstance(pipeline, StableDiffusionControlNetPipeline)
            and type(pipeline).prepare_image is StableDiffusionControlNetPipeline.prepare_image
            and not isinstance(pipeline.controlnet, NamedMultiControlNet)
        )

    def check(self, request: Mapping[str, Any], count: int) -> None:
        """Masks [B, H, W], one per prompt."""
        masks = request['mask']
        if masks.dim() != 3:
            raise ValueError(f'expected masks [B, H, W], got shape {tuple(masks.shape)}')
        if len(masks) != count:
            raise ValueError(f'{len(masks)} masks but {count} prompts')

    def default_size(self, request: Mapping[str, Any]) -> tuple[int, int] | None:
        """The masks' size."""
        return int(request['mask'].shape[-2]), int(request['mask'].shape[-1])

    def contribute(self, call: BatchCall) -> None:
        """The condition image of this batch's masks."""
        masks = call.request['mask'][call.batch].to(call.device)
        encoding = self.settings.get('condition_encoding', 'grey')
        call.kwargs['image'] = encode_condition(masks, call.size, encoding).to(call.dtype)


__all__ = ('MaskControlNetFamily',)
