# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Reference-image requests of a :class:`.Synthesizer` (the global content condition).

A model with an IP-Adapter (:mod:`~torchgeo_earthsynth.models.global_content`) takes a
reference per sample, as images (encoded by the pipeline's CLIP ``image_encoder``) or as
CLIP image embeddings. Without a reference, or at scale 0, the image branch is skipped:
the output is the model's without the adapter, bit for bit.

diffusers' pipelines take one reference per call (``ip_adapter_image_embeds`` is repeated
for every prompt), so the :class:`.Synthesizer` hands each sample's embedding to the UNet
itself, stacked as the pipeline's batch ([zeros (unconditional), given], as the
pipelines' own unconditional input), with
:func:`~torchgeo_earthsynth.models.forward_kwargs`, and sets the scale with
:func:`~torchgeo_earthsynth.models.ip_adapter_scale`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from torchgeo_earthsynth.families.base import (
    BatchCall,
    GeneratorFamily,
    register,
    stack_for_guidance,
)
from torchgeo_earthsynth.models import (
    encode_reference,
    forward_kwargs,
    has_global_content,
    ip_adapter_scale,
)


def reference_embeddings(pipeline: Any, reference: Tensor | None, count: int) -> Tensor:
    """The request's reference as CLIP image embeddings [B, D] (zeros when none is given).

    Args:
        pipeline: a pipeline whose UNet has an IP-Adapter.
        reference: float [B, 3, H, W] images in 0..255, or [B, D] CLIP image embeddings.
        count: the request's batch size.

    Returns:
        float32 [B, D] on the synthesizer's device, or None for a model without an
        IP-Adapter.

    Raises:
        ValueError: for a reference of the wrong shape or batch size, or images without an
            image encoder.
    """
    device = pipeline.unet.device
    (projection,) = pipeline.unet.encoder_hid_proj.image_projection_layers
    dim = int(projection.image_embeds.in_features)
    if reference is None:
        return torch.zeros(count, dim, device=device)
    encoder = getattr(pipeline, 'image_encoder', None)
    shape = list(reference.shape)
    if reference.dim() == 4 and shape[:2] == [count, 3]:
        if encoder is None:
            raise ValueError(
                'reference images need the pipeline image_encoder (a CLIP vision model); '
                f'pass CLIP image embeddings [{count}, {dim}] instead'
            )
        return encode_reference(encoder, reference.to(device))
    if shape != [count, dim]:
        raise ValueError(
            f'reference: expected images float [{count}, 3, H, W] in 0..255 or CLIP image '
            f'embeddings [{count}, {dim}] for {count} prompts, got {shape}'
        )
    return reference.to(device, torch.float32)


@register
class GlobalContentFamily(GeneratorFamily):
    """CRS-Diff's global content: a reference image through the UNet's IP-Adapter.

    ``reference`` images float [B, 3, H, W] 0..255 (encoded by the pipeline's CLIP
    ``image_encoder``) or their CLIP image embeddings [B, D]; without one the model runs at
    IP-Adapter scale 0. ``reference_scale`` (default 1.0) scales it.
    """

    def __init__(self, pipeline: Any, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(pipeline, settings)
        self.accepts = frozenset({'reference', 'reference_scale'})

    @staticmethod
    def recognises(pipeline: Any) -> bool:
        """A UNet with an IP-Adapter."""
        return has_global_content(pipeline.unet)

    def prepare(self, request: Mapping[str, Any], count: int) -> dict[str, Any]:
        """The reference embeddings (zeros without one) and the adapter's scale."""
        reference = request.get('reference')
        scale = 0.0 if reference is None else float(request.get('reference_scale', 1.0))
        embeddings = reference_embeddings(self.pipeline, reference, count)
        return {'reference': embeddings, 'reference_scale': scale}

    def contribute(self, call: BatchCall) -> None:
        """One reference per sample into the UNet's ``added_cond_kwargs``, at its scale."""
        unet = call.pipeline.unet
        chunk = call.prepared['reference'][call.batch, None].to(call.device, call.dtype)
        added = {'image_embeds': [stack_for_guidance(chunk, call.guided)]}
        call.stack.enter_context(forward_kwargs(unet, added_cond_kwargs=added))
        call.stack.enter_context(ip_adapter_scale(unet, call.prepared['reference_scale']))


__all__ = ('GlobalContentFamily', 'reference_embeddings')
