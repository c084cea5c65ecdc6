# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Online synthetic rows: generated on the batch's device, R-Filtered, optionally banked."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from torchgeo_earthsynth.compat import DETECTION_BOXES, DETECTION_LABELS
from torchgeo_earthsynth.families.multicontrol import controls_from_masks
from torchgeo_earthsynth.rfilter.protocol import SampleFilter, filter_verdict
from torchgeo_earthsynth.synthesis.synthesizer import Synthesizer

from .synthetic_labels import present_prompts
from .synthetic_sources import BankLike, SynthesizerLoader


def ready_synthesizer(
    synthesizer: Synthesizer | SynthesizerLoader, device: torch.device
) -> Synthesizer:
    """The synthesizer (loaded on first use) with its pipeline on ``device``."""
    synth = synthesizer.get() if isinstance(synthesizer, SynthesizerLoader) else synthesizer
    # datamodule attributes are not moved by Lightning: move the pipeline to the batch
    if synth.device != device:
        synth.pipeline.to(device)
    return synth


def generate_on_device(
    synthesizer: Synthesizer | SynthesizerLoader,
    conditions: Tensor,
    prompts: list[str],
    generator: torch.Generator,
    device: torch.device,
    metadata: Tensor | None = None,
) -> Tensor:
    """Generate one image per condition on the batch's device, seeded from ``generator``.

    A multi-condition generator gets the maps its controls make from the condition masks
    (``seg``, ``road``; :func:`~torchgeo_earthsynth.families.controls_from_masks`).

    Args:
        synthesizer: the synthesizer, or its loader (loaded on first use).
        conditions: int64 [N, H, W] vocabulary-id masks.
        prompts: N prompts.
        generator: the CPU generator the per-image seeds are drawn from.
        device: the batch's device.
        metadata: [N, 7] metadata for a metadata-conditioned generator, else None.

    Returns:
        float32 [N, 3, H, W] in 0..255, a normal tensor (usable with autograd downstream).
    """
    synth = ready_synthesizer(synthesizer, device)
    seeds = torch.randint(0, 2**31 - 1, (len(conditions),), generator=generator)
    with torch.inference_mode():
        if synth.takes('controls'):
            controls = controls_from_masks(synth.pipeline, conditions)
            size = (int(conditions.shape[-2]), int(conditions.shape[-1]))
            images = synth.generate(None, prompts, seeds.tolist(), size, controls=controls)
        else:
            images = synth.generate(conditions, prompts, seeds.tolist(), metadata=metadata)
    return images.clone()


def filter_generated(
    rfilter: SampleFilter | None,
    images: Tensor,
    masks: Tensor,
    prompts: list[str],
    real: Tensor,
) -> Tensor:
    """Which generated samples the R-Filter keeps.

    The R-Filter (a :class:`~torchgeo_earthsynth.rfilter.SampleFilter`, like
    :class:`~torchgeo_earthsynth.rfilter.RFilter`) gets a batch dict with ``image`` float
    [N, 3, H, W] 0..255, ``mask`` int64 [N, H, W] (the conditions, vocabulary ids), ``prompt``
    (N strings) and ``reference`` (the real images the samples stand for), and returns a bool
    tensor [N] or an object with such a ``keep`` attribute; wrap a filter of
    ``(images, masks, prompts)`` in :class:`~torchgeo_earthsynth.rfilter.KeyedFilter`.

    Args:
        rfilter: the R-Filter (None keeps all).
        images: float [N, 3, H, W] 0..255 generated images.
        masks: int64 [N, H, W] their conditions (vocabulary ids).
        prompts: their prompts.
        real: the real images they stand for (the filter's ``reference``).

    Returns:
        bool [N] on the CPU.
    """
    if rfilter is None:
        return torch.ones(len(images), dtype=torch.bool)
    if isinstance(rfilter, nn.Module):
        rfilter.to(images.device)
    batch = {'image': images, 'mask': masks, 'prompt': prompts, 'reference': real}
    keep, _ = filter_verdict(rfilter(batch), len(images))
    return keep


def bank_generated(
    bank: BankLike | None,
    images: Tensor,
    masks: Tensor,
    prompts: list[str],
    keep: Tensor,
    boxes: list[tuple[Tensor, Tensor]] | None = None,
) -> int:
    """Add the kept generated samples to a bank.

    Args:
        bank: the bank (it must have ``add``).
        images: float [N, 3, H, W] 0..255 generated images.
        masks: int64 [N, H, W] their conditions (vocabulary ids).
        prompts: their prompts.
        keep: bool [N], which to add.
        boxes: per sample, the boxes it was generated from and their vocabulary ids
            (detection): the bank keeps them as its exact label.

    Returns:
        How many samples the bank added.

    Raises:
        ValueError: if there is no bank or it has no ``add()``.
    """
    add = getattr(bank, 'add', None)
    if add is None:
        raise ValueError(f'add_to_bank=True but the bank {bank!r} has no add()')
    _, present = present_prompts(masks)
    samples = [
        {
            'image': images[k].detach().cpu(),
            'mask': masks[k].cpu(),
            'prompt': prompts[k],
            'categories': present[k].cpu(),
            'source': 'synthetic',
        }
        | ({} if boxes is None else {DETECTION_BOXES: boxes[k][0], DETECTION_LABELS: boxes[k][1]})
        for k in keep.nonzero().flatten().tolist()
    ]
    return int(add(samples))


__all__ = (
    'bank_generated',
    'filter_generated',
    'generate_on_device',
    'ready_synthesizer',
)
