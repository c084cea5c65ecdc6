# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Text2Earth: the resolution level as the UNet's ``class_labels``, from levels or the GSD."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from torchgeo_earthsynth.families.base import (
    BatchCall,
    GeneratorFamily,
    register,
    stack_for_guidance,
)
from torchgeo_earthsynth.models import (
    check_no_level_prefix,
    forward_kwargs,
    resolution_levels,
    takes_levels,
)


@register
class ResolutionLevelFamily(GeneratorFamily):
    """Text2Earth's resolution level: 0 (unknown) or 10..18 (GSD = 2 ** (17 - level) m/px).

    ``levels`` per sample, else the nearest level to ``metadata``'s GSD, else 0. Prompts
    carry the caption alone (their ``"{level}_GOOGLE_LEVEL_"`` prefix is refused).
    """

    def __init__(self, pipeline: Any, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(pipeline, settings)
        self.accepts = frozenset({'levels', 'metadata'})

    @staticmethod
    def recognises(pipeline: Any) -> bool:
        """A UNet with a ``timestep`` class embedding."""
        return takes_levels(pipeline.unet)

    def check(self, request: Mapping[str, Any], count: int) -> None:
        """Captions without a level prefix."""
        check_no_level_prefix(request['prompt'])

    def prepare(self, request: Mapping[str, Any], count: int) -> dict[str, Any]:
        """Each sample's level."""
        return {'levels': resolution_levels(count, request.get('levels'), request.get('metadata'))}

    def stacks_inputs(self, request: Mapping[str, Any]) -> bool:
        """Levels are stacked [unconditional, conditional] under guidance."""
        return True

    def contribute(self, call: BatchCall) -> None:
        """The batch's levels as ``class_labels`` of every UNet call."""
        labels = call.prepared['levels'][call.batch].to(call.device, torch.float32)
        labels = stack_for_guidance(labels, call.guided)
        call.stack.enter_context(forward_kwargs(call.pipeline.unet, class_labels=labels))


__all__ = ('ResolutionLevelFamily',)
