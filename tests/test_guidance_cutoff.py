# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

from __future__ import annotations

from typing import Any

import pytest
import torch
from diffusers import StableDiffusionControlNetPipeline
from torch import Tensor

from torchgeo_earthsynth.synthesis import Synthesizer, encode_condition
from torchgeo_earthsynth.synthesis.guidance_cutoff import GuidanceCutoff
from torchgeo_earthsynth.vocabulary import prompt_from_mask

# diffusers < 0.33 lets a ControlNet pipeline's step callback edit only latents and prompts
EDITS_IMAGE = 'image' in StableDiffusionControlNetPipeline._callback_tensor_inputs
needs_image_edits = pytest.mark.skipif(
    not EDITS_IMAGE, reason="this diffusers' step callback cannot edit the ControlNet image"
)

SIZE = 32
STEPS = 4


@pytest.fixture(scope='module')
def masks() -> Tensor:
    generator = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, 10, (3, SIZE // 8, SIZE // 8), generator=generator)
    return blocks.repeat_interleave(8, -1).repeat_interleave(8, -2)


@pytest.fixture(scope='module')
def prompts(masks: Tensor) -> list[str]:
    return [prompt_from_mask(m) for m in masks]


def _synth(guidance_steps: int | None, **kwargs: Any) -> Synthesizer:
    return Synthesizer.tiny(
        image_size=SIZE,
        num_inference_steps=STEPS,
        guidance_scale=3.0,
        guidance_steps=guidance_steps,
        **kwargs,
    )


def _batch_sizes(synth: Synthesizer, masks: Tensor, prompts: list[str]) -> dict[str, list[int]]:
    """The batch size each UNet and ControlNet forward of one generate call sees."""
    seen: dict[str, list[int]] = {'unet': [], 'controlnet': []}
    hooks = [
        getattr(synth.pipeline, name).register_forward_pre_hook(
            lambda _, args, name=name: seen[name].append(args[0].shape[0])
        )
        for name in seen
    ]
    try:
        synth.generate(masks, prompts)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


@needs_image_edits
def test_all_steps_equal_full_guidance(masks: Tensor, prompts: list[str]) -> None:
    full = _synth(None).generate(masks, prompts)
    torch.testing.assert_close(_synth(STEPS).generate(masks, prompts), full)
    assert not torch.allclose(_synth(2).generate(masks, prompts), full, atol=1e-3)


@needs_image_edits
def test_unconditional_pass_stops(masks: Tensor, prompts: list[str]) -> None:
    batch = len(masks)
    seen = _batch_sizes(_synth(2, batch_size=batch), masks, prompts)
    expected = [2 * batch] * 2 + [batch] * (STEPS - 2)
    assert seen == {'unet': expected, 'controlnet': expected}
    seen = _batch_sizes(_synth(None, batch_size=batch), masks, prompts)
    assert seen['unet'] == [2 * batch] * STEPS


@needs_image_edits
def test_cutoff_keeps_the_conditional_half(masks: Tensor, prompts: list[str]) -> None:
    """A cut after step 0 == one guided step, then unguided steps from its latents (DDIM)."""
    pipe = _synth(None, scheduler='ddim').pipeline
    side = SIZE // pipe.vae_scale_factor
    shape = (len(masks), pipe.vae.config.latent_channels, side, side)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    common = {
        'prompt': prompts,
        'image': encode_condition(masks, (SIZE, SIZE)),
        'height': SIZE,
        'width': SIZE,
        'num_inference_steps': STEPS,
        'latents': latents,
        'output_type': 'pt',
    }
    captured: dict[str, Tensor] = {}

    def capture(_: Any, step: int, t: Any, kwargs: dict[str, Tensor]) -> dict[str, Tensor]:
        if step == 0:
            captured['latents'] = kwargs['latents'].clone()
        return kwargs

    def resume(_: Any, step: int, t: Any, kwargs: dict[str, Tensor]) -> dict[str, Tensor]:
        return {'latents': captured['latents']} if step == 0 else kwargs

    with torch.inference_mode():
        cut = pipe(
            **common,
            guidance_scale=3.0,
            callback_on_step_end=GuidanceCutoff(1),
            callback_on_step_end_tensor_inputs=GuidanceCutoff.tensor_inputs(pipe),
        ).images
        pipe(**common, guidance_scale=3.0, callback_on_step_end=capture)
        reference = pipe(**common, guidance_scale=1.0, callback_on_step_end=resume).images
        guided = pipe(**common, guidance_scale=3.0).images
    torch.testing.assert_close(cut, reference, atol=1e-6, rtol=0)
    assert (cut - guided).abs().max() > 1e-3


@needs_image_edits
def test_samples_do_not_depend_on_their_batch(masks: Tensor, prompts: list[str]) -> None:
    together = _synth(2, batch_size=3).generate(masks, prompts, seeds=[5, 6, 7])
    alone = _synth(2, batch_size=1).generate(masks, prompts, seeds=[5, 6, 7])
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)


def test_bad_guidance_steps() -> None:
    with pytest.raises(ValueError, match='guidance_steps'):
        _synth(0)
    with pytest.raises(ValueError, match='guidance steps'):
        GuidanceCutoff(0)
    synth = Synthesizer.tiny(
        image_size=SIZE, family='diffusionsat', num_inference_steps=STEPS, guidance_steps=2
    )
    with pytest.raises(ValueError, match='prompts and masks only'):
        synth.generate(None, ['a'], metadata=torch.full((1, 7), float('nan')))


@pytest.mark.skipif(EDITS_IMAGE, reason='this diffusers lets the callback edit the image')
def test_old_diffusers_refuses_the_cutoff(masks: Tensor, prompts: list[str]) -> None:
    with pytest.raises(ValueError, match='upgrade diffusers'):
        _synth(2).generate(masks, prompts)
