# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

from __future__ import annotations

from typing import Any

import pytest
import torch
from diffusers import (
    StableDiffusionInpaintPipeline,
    UNet2DConditionModel,
    UniPCMultistepScheduler,
)

from torchgeo_earthsynth.families.inpainting import (
    SEAM,
    class_region,
    composite,
    inpainting_pipeline,
    outpaint_canvas,
)
from torchgeo_earthsynth.models import tiny_parts, tiny_text2earth_unet
from torchgeo_earthsynth.synthesis import Synthesizer, build_text_pipeline, encode_condition

SIZE = 32


def scene(n: int = 2, seed: int = 0) -> torch.Tensor:
    """Smooth-ish float 0..255 scenes, not on a grid of round values."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, SIZE // 4, SIZE // 4, generator=generator)
    fine = torch.rand(n, 3, SIZE, SIZE, generator=generator)
    return (coarse.repeat_interleave(4, -1).repeat_interleave(4, -2) * 0.8 + fine * 0.2) * 255


def cloud(n: int = 2) -> torch.Tensor:
    """A cloud (True = generate) in each scene, at different places."""
    mask = torch.zeros(n, SIZE, SIZE, dtype=torch.bool)
    for i in range(n):
        mask[i, 4 + 4 * i : 20 + 4 * i, 6:22] = True
    return mask


def assert_kept_exactly(out: torch.Tensor, image: torch.Tensor, region: torch.Tensor) -> None:
    kept = ~region[:, None].expand_as(image)
    assert torch.equal(out[kept], image[kept])  # bit for bit
    inside = region[:, None].expand_as(image)
    assert (out[inside] - image[inside]).abs().mean() > 1  # the region was generated


def test_composite_is_exact_outside_and_fades_inside() -> None:
    image, generated = scene(1), scene(1, seed=1)
    region = cloud(1)
    out = composite(generated, image, region, seam=3)
    assert out.dtype == image.dtype
    assert_kept_exactly(out, image, region)
    # 3 px in from the edge the region is the generated image; at the edge a blend
    torch.testing.assert_close(out[..., 8:16, 10:18], generated[..., 8:16, 10:18])
    edge = out[0, :, 4, 12]
    weight = (edge - image[0, :, 4, 12]) / (generated[0, :, 4, 12] - image[0, :, 4, 12])
    torch.testing.assert_close(weight, torch.full((3,), 0.25))
    hard = composite(generated, image, region, seam=0)
    assert torch.equal(hard, torch.where(region[:, None], generated, image))


def test_outpaint_canvas_places_the_scene_exactly() -> None:
    image = scene(2)
    canvas, border = outpaint_canvas(image, (8, 4, 0, 12))
    assert canvas.shape == (2, 3, 4 + SIZE + 12, 8 + SIZE) and border.shape == (2, 48, 40)
    assert torch.equal(canvas[:, :, 4 : 4 + SIZE, 8:], image)
    assert not border[:, 4 : 4 + SIZE, 8:].any()
    assert border.sum() == 2 * (48 * 40 - SIZE * SIZE)
    with pytest.raises(ValueError, match='pads >= 0'):
        outpaint_canvas(image, -1)


def test_class_region_grows_around_the_class() -> None:
    mask = torch.zeros(1, 8, 8, dtype=torch.long)
    mask[0, 3:5, 3:5] = 6
    assert class_region(mask, [6], grow=0).sum() == 4
    assert class_region(mask, [6], grow=1).sum() == 16
    assert not class_region(mask, [7]).any()


@pytest.fixture(scope='module')
def text2earth() -> Synthesizer:
    return Synthesizer.tiny(image_size=SIZE, family='text2earth', num_inference_steps=2)


def test_text_family_inpaints_by_latent_blending(text2earth: Synthesizer) -> None:
    image, region = scene(2), cloud(2)
    prompts = ['a lake', 'a forest']
    out = text2earth.generate(
        None, prompts, [3, 4], levels=[16, 16], image=image, inpaint_mask=region
    )
    assert out.shape == image.shape and out.dtype == torch.float32
    assert_kept_exactly(out, image, region)
    # a sample depends on its own seed only, whatever the batch
    alone = text2earth.generate(
        None, prompts[1:], [4], levels=[16], image=image[1:], inpaint_mask=region[1:]
    )
    torch.testing.assert_close(alone[0], out[1], atol=0.05, rtol=0)
    other = text2earth.generate(
        None, prompts[1:], [40], levels=[16], image=image[1:], inpaint_mask=region[1:]
    )
    assert (other[0] - out[1]).abs().mean() > 0.1
    # no seam: the region is the generated pixels themselves, up to its edge
    hard = text2earth.generate(
        None, prompts, [3, 4], levels=[16, 16], image=image, inpaint_mask=region, inpaint_seam=0
    )
    assert_kept_exactly(hard, image, region)
    near = torch.nn.functional.max_pool2d(
        (~region)[:, None].float(), 2 * SEAM + 1, stride=1, padding=SEAM
    )[:, 0].bool()
    deep, rim = region & ~near, region & near  # past the seam / within it
    assert deep.any() and rim.any()
    torch.testing.assert_close(hard[:, 0][deep], out[:, 0][deep], atol=0.05, rtol=0)
    assert (hard[:, 0][rim] - out[:, 0][rim]).abs().mean() > 1  # the fade is gone


def test_inpainting_unet_keeps_the_scene(text2earth: Synthesizer) -> None:
    synth = Synthesizer.tiny(image_size=SIZE, family='text2earth_inpainting', num_inference_steps=2)
    image, region = scene(2), cloud(2)
    out = synth.generate(None, ['a lake'] * 2, [1, 2], image=image, inpaint_mask=region)
    assert_kept_exactly(out, image, region)
    # the masked image reaches the UNet: another scene around the hole changes the fill
    other = synth.generate(None, ['a lake'] * 2, [1, 2], image=scene(2, 5), inpaint_mask=region)
    inside = region[:, None].expand_as(image)
    assert (other[inside] - out[inside]).abs().mean() > 0.01


def test_mask_conditioned_inpainting_edits_a_class_in_place() -> None:
    synth = Synthesizer.tiny(image_size=SIZE, num_inference_steps=2)
    masks = torch.zeros(1, SIZE, SIZE, dtype=torch.long)
    masks[:, 8:24, 8:24] = 8  # building
    image, region = scene(1), class_region(masks, [8])
    water = masks.clone()
    water[region] = 6
    conditions: list[torch.Tensor] = []

    def record(_: Any, args: Any, kwargs: dict[str, Any]) -> None:
        conditions.append(kwargs['controlnet_cond'])

    handle = synth.pipeline.controlnet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        out = synth.generate(water, ['water'], [1], image=image, inpaint_mask=region)
    finally:
        handle.remove()
    assert_kept_exactly(out, image, region)
    # the edited mask steers every step (for both guidance branches)
    assert len(conditions) == 2
    expected = encode_condition(water).expand(2, -1, -1, -1)
    for condition in conditions:
        torch.testing.assert_close(condition, expected)


def test_outpainting_extends_a_scene(text2earth: Synthesizer) -> None:
    image = scene(1)[..., :16, :24]
    canvas, border = outpaint_canvas(image, (4, 8, 4, 8))
    out = text2earth.generate(None, ['farmland'], [2], image=canvas, inpaint_mask=border)
    assert out.shape == (1, 3, SIZE, SIZE)
    assert torch.equal(out[..., 8:24, 4:28], image)
    new = border[:, None].expand_as(out)
    assert (out[new] - canvas[new]).abs().mean() > 1


def test_families_that_cannot_inpaint_and_bad_requests(text2earth: Synthesizer) -> None:
    sr = Synthesizer.tiny(family='diffusionsat_sr', num_inference_steps=1)
    with pytest.raises(ValueError, match='super-resolution ControlNet cannot inpaint'):
        inpainting_pipeline(sr.pipeline)
    place = torch.tensor([[2.35, 48.85, 0.5, 0.0, 2021, 6, 15]])
    with pytest.raises(ValueError, match='cannot inpaint'):
        sr.generate(
            None,
            ['x'],
            metadata=place,
            low_res=torch.rand(1, 10, 16, 16),
            image=scene(1),
            inpaint_mask=cloud(1),
        )
    image, region = scene(1), cloud(1)
    with pytest.raises(ValueError, match='needs both image'):
        text2earth.generate(None, ['x'], image=image)
    with pytest.raises(ValueError, match=r'inpaint_mask: expected bool \[1, 32, 32\]'):
        text2earth.generate(None, ['x'], image=image, inpaint_mask=region.float())
    with pytest.raises(ValueError, match=r'image: expected float \[1, 3, 32, 32\]'):
        text2earth.generate(None, ['x'], image=image[:, :1], inpaint_mask=region)
    with pytest.raises(ValueError, match='inpaint_seam: expected pixels'):
        text2earth.generate(None, ['x'], image=image, inpaint_mask=region, inpaint_seam=-1)
    with pytest.raises(ValueError, match='inpaint_seam is for in/outpainting'):
        text2earth.generate(None, ['x'], inpaint_seam=0)


def test_inpainting_equals_diffusers_inpainting_pipeline() -> None:
    """A 9-channel SD-inpainting UNet: what StableDiffusionInpaintPipeline gives, past the seam."""
    parts = tiny_parts(0, SIZE)
    unet = tiny_text2earth_unet(0, SIZE // 2, inpainting=True)
    parts.unet = UNet2DConditionModel.from_config({**unet.config, 'class_embed_type': None})
    synth = Synthesizer(build_text_pipeline(parts), num_inference_steps=2, guidance_scale=3.0)
    image, region = scene(2), cloud(2)
    prompts, seeds = ['a lake', 'a field'], [7, 8]
    ours = synth.generate(None, prompts, seeds, image=image, inpaint_mask=region)
    components = {**synth.pipeline.components, 'requires_safety_checker': False}
    components['scheduler'] = UniPCMultistepScheduler.from_config(components['scheduler'].config)
    pipe = StableDiffusionInpaintPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    latents = torch.stack(
        [
            torch.randn(4, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(s))
            for s in seeds
        ]
    )
    theirs = pipe(
        prompt=prompts,
        image=image / 255,
        mask_image=region[:, None].float(),
        height=SIZE,
        width=SIZE,
        num_inference_steps=2,
        guidance_scale=3.0,
        latents=latents,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
        output_type='pt',
    ).images
    deep = torch.zeros_like(region)
    deep[0, 8:16, 10:18] = deep[1, 12:20, 10:18] = True  # more than SEAM px inside
    deep = deep[:, None].expand_as(image)
    torch.testing.assert_close(ours[deep], theirs[deep] * 255, atol=1e-3, rtol=0)
    assert (ours[deep] - image[deep]).abs().mean() > 1
