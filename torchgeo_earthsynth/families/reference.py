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

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from torchgeo_earthsynth.models import encode_reference, has_global_content

if TYPE_CHECKING:
    from torchgeo_earthsynth.synthesis.synthesizer import Synthesizer

__all__ = ('reference_embeddings', 'takes_reference')


def takes_reference(synth: Synthesizer) -> bool:
    """Whether the synthesizer's UNet has an IP-Adapter (takes a reference image)."""
    return has_global_content(synth.pipeline.unet)


def reference_embeddings(synth: Synthesizer, reference: Tensor | None, count: int) -> Tensor | None:
    """The request's reference as CLIP image embeddings [B, D] (zeros when none is given).

    Args:
        synth: the synthesizer.
        reference: float [B, 3, H, W] images in 0..255, or [B, D] CLIP image embeddings.
        count: the request's batch size.

    Returns:
        float32 [B, D] on the synthesizer's device, or None for a model without an
        IP-Adapter.

    Raises:
        ValueError: for a reference to a model without an IP-Adapter, of the wrong shape or
            batch size, or images without an image encoder.
    """
    if not takes_reference(synth):
        if reference is not None:
            raise ValueError(
                'this synthesizer has no global content adapter (IP-Adapter): it takes no '
                'reference (pass None)'
            )
        return None
    (projection,) = synth.pipeline.unet.encoder_hid_proj.image_projection_layers
    dim = int(projection.image_embeds.in_features)
    if reference is None:
        return torch.zeros(count, dim, device=synth.device)
    encoder = getattr(synth.pipeline, 'image_encoder', None)
    shape = list(reference.shape)
    if reference.dim() == 4 and shape[:2] == [count, 3]:
        if encoder is None:
            raise ValueError(
                'reference images need the pipeline image_encoder (a CLIP vision model); '
                f'pass CLIP image embeddings [{count}, {dim}] instead'
            )
        return encode_reference(encoder, reference.to(synth.device))
    if shape != [count, dim]:
        raise ValueError(
            f'reference: expected images float [{count}, 3, H, W] in 0..255 or CLIP image '
            f'embeddings [{count}, {dim}] for {count} prompts, got {shape}'
        )
    return reference.to(synth.device, torch.float32)
