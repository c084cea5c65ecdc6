# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""DiffusionSat: metadata (place, date, resolution) into its UNet and its ControlNets."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import torch

from torchgeo_earthsynth.conditions import METADATA_FIELDS, NUM_METADATA, check_metadata
from torchgeo_earthsynth.families.base import (
    BatchCall,
    GeneratorFamily,
    register,
    stack_for_guidance,
)
from torchgeo_earthsynth.models import (
    DiffusionSatControlNet,
    DiffusionSatUNet,
    NamedMultiControlNet,
    controlnet_metadata,
    normalize_metadata,
)

#: Sentinel-2's GSD, the low-res metadata of their fMoW super-resolution training.
LOW_RES_GSD: Final = 10.0


def metadata_controlnets(pipeline: Any) -> list[DiffusionSatControlNet]:
    """The ControlNets that take metadata (the pipeline's, or a multi-condition model's)."""
    controlnet = getattr(pipeline, 'controlnet', None)
    if isinstance(controlnet, NamedMultiControlNet):
        return controlnet.metadata_nets()
    if not isinstance(controlnet, DiffusionSatControlNet):
        return []
    return [controlnet] if controlnet.metadata_embedding is not None else []


def _unet_takes_metadata(pipeline: Any) -> bool:
    unet = pipeline.unet
    return isinstance(unet, DiffusionSatUNet) and unet.metadata_embedding is not None


@register
class MetadataFamily(GeneratorFamily):
    """DiffusionSat's metadata: a UNet that needs it, and ControlNets that take it.

    ``metadata`` float32 [B, 7] in physical units (NaN where unknown) is normalised as
    DiffusionSat was trained and handed to the UNet (``cross_attention_kwargs``) and to
    every ControlNet with a metadata embedding (a forward hook). A ControlNet alone takes
    it optionally (absent: all unknown); a super-resolution ControlNet also gets the
    low-res image's (``low_res_metadata``; default ``metadata`` at a 10 m GSD), a temporal
    ControlNet its frames' (prepared by :class:`~torchgeo_earthsynth.families.TemporalFamily`).
    """

    def __init__(self, pipeline: Any, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(pipeline, settings)
        self.controlnets = metadata_controlnets(pipeline)
        self.unet_metadata = _unet_takes_metadata(pipeline)
        self.needs = frozenset({'metadata'}) if self.unet_metadata else frozenset()
        self.accepts = frozenset({'metadata'})

    @staticmethod
    def recognises(pipeline: Any) -> bool:
        """A DiffusionSat UNet, or a ControlNet with a metadata embedding."""
        return _unet_takes_metadata(pipeline) or bool(metadata_controlnets(pipeline))

    def check(self, request: Mapping[str, Any], count: int) -> None:
        """Metadata [B, 7]."""
        for key in ('metadata', 'low_res_metadata'):
            if key in request:
                check_metadata(request[key], count)

    def prepare(self, request: Mapping[str, Any], count: int) -> dict[str, Any]:
        """The request's (and its low-res image's) metadata, normalised."""
        metadata = request.get('metadata')
        if metadata is None:  # a ControlNet with metadata: all fields unknown
            metadata = torch.full((count, NUM_METADATA), math.nan)
        prepared = {'metadata': normalize_metadata(metadata.float())}
        if 'low_res' in request and self.controlnets:
            low_res_metadata = request.get('low_res_metadata')
            if low_res_metadata is None:
                low_res_metadata = metadata.float().clone()
                low_res_metadata[:, METADATA_FIELDS.index('gsd')] = LOW_RES_GSD
            prepared['condition_metadata'] = normalize_metadata(low_res_metadata.float())
        return prepared

    def stacks_inputs(self, request: Mapping[str, Any]) -> bool:
        """Metadata is stacked [unconditional, conditional] under guidance."""
        return True

    def contribute(self, call: BatchCall) -> None:
        """The UNet's ``cross_attention_kwargs`` and the ControlNets' metadata hooks."""
        metadata, condition_metadata = (
            None if values is None else stack_for_guidance(call.chunk(values), call.guided)
            for values in (call.prepared['metadata'], call.prepared.get('condition_metadata'))
        )
        if self.unet_metadata:  # pipelines hand cross_attention_kwargs to the UNet untouched
            call.kwargs['cross_attention_kwargs'] = {'metadata': metadata}
        for controlnet in self.controlnets:
            call.stack.enter_context(controlnet_metadata(controlnet, metadata, condition_metadata))


__all__ = ('LOW_RES_GSD', 'MetadataFamily', 'metadata_controlnets')
