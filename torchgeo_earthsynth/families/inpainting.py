# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""In- and outpainting for every family that can: its inpainting pipeline, exact compositing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

import torch
import torch.nn.functional as F
from diffusers import (
    DiffusionPipeline,
    StableDiffusionControlNetInpaintPipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
)
from torch import Tensor

from torchgeo_earthsynth.families.base import BatchCall, GeneratorFamily, register
from torchgeo_earthsynth.models import LowResControlNetPipeline

__all__ = (
    'SEAM',
    'InpaintingFamily',
    'check_inpainting',
    'class_region',
    'composite',
    'inpainting_call',
    'inpainting_pipeline',
    'outpaint_canvas',
)

#: Pixels over which a generated region fades into the kept image, inside the region.
SEAM: Final = 4


def inpainting_pipeline(pipeline: DiffusionPipeline) -> DiffusionPipeline:
    """Diffusers' inpainting pipeline over the same modules as ``pipeline``.

    A 9-channel UNet (SD-inpainting / Text2Earth-inpainting layout: latents, mask,
    masked-image latents) is fed the masked image; a plain 4-channel UNet is steered by
    diffusers' latent blending (the known region re-noised to each step's level, RePaint
    style). A mask ControlNet keeps its mask condition (EarthSynth + a region).

    Args:
        pipeline: a family's text or ControlNet pipeline.

    Returns:
        The inpainting pipeline, sharing (not copying) the modules.

    Raises:
        ValueError: for a family that cannot inpaint (a super-resolution ControlNet).
    """
    _check_can_inpaint(pipeline)
    # A copy of the scheduler: these pipelines' constructors rewrite an old config in place.
    scheduler = type(pipeline.scheduler).from_config(pipeline.scheduler.config)
    components = {**pipeline.components, 'scheduler': scheduler, 'requires_safety_checker': False}
    inpainter: DiffusionPipeline
    if isinstance(pipeline, StableDiffusionControlNetPipeline):
        inpainter = StableDiffusionControlNetInpaintPipeline(**components)
    else:
        inpainter = StableDiffusionInpaintPipeline(**components)
    inpainter.set_progress_bar_config(disable=True)
    return inpainter


def _check_can_inpaint(pipeline: DiffusionPipeline) -> None:
    if isinstance(pipeline, LowResControlNetPipeline):
        raise ValueError(
            'a super-resolution ControlNet cannot inpaint (its condition is the low-res '
            'image); in/outpainting needs a text, mask ControlNet or inpainting model'
        )
    if not isinstance(pipeline, StableDiffusionControlNetPipeline | StableDiffusionPipeline):
        raise ValueError(f'{type(pipeline).__name__} has no inpainting counterpart')


def check_inpainting(
    pipeline: DiffusionPipeline,
    image: Tensor | None,
    inpaint_mask: Tensor | None,
    count: int,
    size: tuple[int, int],
) -> None:
    """Check an in/outpainting request: a family that can, both or neither, shapes, dtypes.

    Args:
        pipeline: the family's pipeline.
        image: float [B, 3, H, W] in 0..255 (TorchGeo's image convention).
        inpaint_mask: bool [B, H, W], True where to generate.
        count: B, the number of prompts.
        size: the output (H, W).

    Raises:
        ValueError: for a family that cannot inpaint, or naming the argument and what was
            expected.
    """
    if (image is None) != (inpaint_mask is None):
        raise ValueError('in/outpainting needs both image [B, 3, H, W] and inpaint_mask [B, H, W]')
    if image is None or inpaint_mask is None:
        return
    _check_can_inpaint(pipeline)
    expected = [count, 3, *size]
    if list(image.shape) != expected or not image.is_floating_point():
        raise ValueError(
            f'image: expected float [{", ".join(map(str, expected))}] in 0..255, got '
            f'{image.dtype} {list(image.shape)}'
        )
    if inpaint_mask.dtype != torch.bool or list(inpaint_mask.shape) != [count, *size]:
        raise ValueError(
            f'inpaint_mask: expected bool [{count}, {size[0]}, {size[1]}] (True = generate), '
            f'got {inpaint_mask.dtype} {list(inpaint_mask.shape)}'
        )


def inpainting_call(
    pipeline: DiffusionPipeline,
    family_inputs: dict[str, Any],
    image: Tensor,
    inpaint_mask: Tensor,
    seeds: Sequence[int],
    dtype: torch.dtype,
) -> tuple[DiffusionPipeline, dict[str, Any]]:
    """The inpainting pipeline and its inputs for one batch of a family's request.

    Args:
        pipeline: the family's pipeline.
        family_inputs: the family's inputs (a mask ControlNet's condition under ``image``).
        image: float [B, 3, H, W] in 0..255.
        inpaint_mask: bool [B, H, W], True where to generate.
        seeds: the batch's seeds: each sample's VAE encoding draws from its own.
        dtype: the pipeline's dtype.

    Returns:
        The pipeline to call and its keyword inputs.
    """
    inputs = dict(family_inputs)
    if 'image' in inputs:  # a mask ControlNet's condition
        inputs['control_image'] = inputs.pop('image')
    device = pipeline.unet.device
    inputs.update(
        image=(image / 255).to(device, dtype),
        mask_image=inpaint_mask[:, None].to(device, dtype),
        generator=[torch.Generator().manual_seed(seed) for seed in seeds],
    )
    return inpainting_pipeline(pipeline), inputs


def _seam_weights(region: Tensor, seam: int) -> Tensor:
    """0 outside ``region``; inside, from 1 / (seam + 1) next to it up to 1 ``seam`` px in."""
    reached = (~region).float()
    steps = torch.zeros_like(reached)
    for _ in range(seam):  # dilating the kept part one pixel at a time
        reached = F.max_pool2d(reached, 3, stride=1, padding=1)
        steps += 1 - reached
    return torch.where(region, (steps + 1) / (seam + 1), 0.0)


def composite(generated: Tensor, image: Tensor, inpaint_mask: Tensor, seam: int = SEAM) -> Tensor:
    """``generated`` inside the region, ``image`` exactly (bit for bit) outside it.

    Inside the region, the generated pixels fade into the image's over ``seam`` pixels from
    its edge, so no seam shows; outside it nothing is touched.

    Args:
        generated: float [B, 3, H, W] 0..255.
        image: float [B, 3, H, W] 0..255.
        inpaint_mask: bool [B, H, W], True where generated.
        seam: blend width in pixels (0: a hard paste).

    Returns:
        float [B, 3, H, W] in ``image``'s dtype.
    """
    region = inpaint_mask[:, None].to(image.device)
    alpha = _seam_weights(region, seam).to(image.dtype)
    generated = generated.to(image.device, image.dtype)
    # lerp is exact at both ends: the generated pixels themselves past the seam
    return torch.where(region, torch.lerp(image, generated, alpha), image)


@register
class InpaintingFamily(GeneratorFamily):
    """In- and outpainting over any family that can: ``image`` + ``inpaint_mask``.

    The pipeline becomes diffusers' inpainting counterpart over the same modules; every
    pixel outside ``inpaint_mask`` is returned bit for bit (:func:`composite`). A 9-channel
    inpainting UNet (Text2Earth-inpainting) needs both.
    """

    def __init__(self, pipeline: Any, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(pipeline, settings)
        self.accepts = frozenset({'image', 'inpaint_mask', 'inpaint_seam'})
        if pipeline.unet.config.in_channels != pipeline.vae.config.latent_channels:
            self.needs = frozenset({'image', 'inpaint_mask'})
            self.title = 'an inpainting model (9-channel UNet)'

    @staticmethod
    def recognises(pipeline: Any) -> bool:
        """Every pipeline: one that cannot inpaint refuses a request that asks it to."""
        return True

    def default_size(self, request: Mapping[str, Any]) -> tuple[int, int] | None:
        """The image's size."""
        image = request.get('image')
        return None if image is None else (int(image.shape[-2]), int(image.shape[-1]))

    def check_size(self, request: Mapping[str, Any], size: tuple[int, int]) -> None:
        """Both or neither of image and region, at the output size; a seam of >= 0 px."""
        image, region = request.get('image'), request.get('inpaint_mask')
        check_inpainting(self.pipeline, image, region, len(request['prompt']), size)
        seam = request.get('inpaint_seam', SEAM)
        if image is None and 'inpaint_seam' in request:
            raise ValueError('inpaint_seam is for in/outpainting: give image and inpaint_mask')
        if isinstance(seam, bool) or not isinstance(seam, int) or seam < 0:
            raise ValueError(f'inpaint_seam: expected pixels, an int >= 0, got {seam!r}')

    def stacks_inputs(self, request: Mapping[str, Any]) -> bool:
        """The inpainting pipeline's inputs are stacked under guidance."""
        return 'image' in request

    def contribute(self, call: BatchCall) -> None:
        """The inpainting pipeline and its image, region and per-sample generators."""
        if 'image' in call.request:
            image, region = call.request['image'], call.request['inpaint_mask']
            call.pipeline, call.kwargs = inpainting_call(
                call.pipeline,
                call.kwargs,
                image[call.batch],
                region[call.batch],
                call.seeds,
                call.dtype,
            )

    def finish(self, call: BatchCall, images: Tensor) -> Tensor:
        """The kept pixels pasted back exactly, the region faded in over the seam."""
        if 'image' not in call.request:
            return images
        image, region = call.request['image'], call.request['inpaint_mask']
        seam = call.request.get('inpaint_seam', SEAM)
        return composite(images, image[call.batch], region[call.batch], seam)


def outpaint_canvas(
    image: Tensor,
    pad: int | tuple[int, int, int, int],
    mode: Literal['replicate', 'reflect', 'constant'] = 'replicate',
) -> tuple[Tensor, Tensor]:
    """Extend a scene: the image on a larger canvas and the mask of the new border.

    Args:
        image: float [B, 3, H, W] 0..255.
        pad: pixels added on every side, or (left, top, right, bottom).
        mode: how the border is filled before generation (``F.pad``'s modes); only the
            seam blend sees it.

    Returns:
        The canvas [B, 3, top + H + bottom, left + W + right] with ``image`` placed
        exactly at [top:top + H, left:left + W], and ``inpaint_mask`` bool [B, H', W'],
        True on the border.

    Raises:
        ValueError: for a negative pad or an image not [B, C, H, W].
    """
    left, top, right, bottom = (pad,) * 4 if isinstance(pad, int) else pad
    if min(left, top, right, bottom) < 0 or image.dim() != 4:
        raise ValueError(
            f'outpaint_canvas: expected image [B, C, H, W] and pads >= 0, got '
            f'{list(image.shape)} and {(left, top, right, bottom)}'
        )
    canvas = F.pad(image, (left, right, top, bottom), mode=mode)
    inpaint_mask = torch.ones(
        image.shape[0], *canvas.shape[-2:], dtype=torch.bool, device=image.device
    )
    inpaint_mask[:, top : top + image.shape[-2], left : left + image.shape[-1]] = False
    return canvas, inpaint_mask


def class_region(mask: Tensor, class_ids: Sequence[int], grow: int = 2) -> Tensor:
    """The region of some classes of a mask, grown by ``grow`` pixels (edit a class in place).

    Args:
        mask: int [B, H, W] vocabulary ids.
        class_ids: the classes to regenerate.
        grow: pixels added around them, so their edges are regenerated too.

    Returns:
        bool [B, H, W], True where to generate.
    """
    region = torch.isin(mask, torch.as_tensor(list(class_ids), device=mask.device))
    if grow > 0:
        size = 2 * grow + 1
        region = F.max_pool2d(region[:, None].float(), size, stride=1, padding=grow)[:, 0] > 0
    return region
