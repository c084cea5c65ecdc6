# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    UNet2DConditionModel,
)
from transformers import CLIPTextModel

from torchgeo_earthsynth.models import (
    TEXT2EARTH_LEVELS,
    gsd_to_level,
    is_text2earth,
    level_to_gsd,
    resolution_levels,
    split_level_prompt,
    tiny_text2earth_parts,
)
from torchgeo_earthsynth.synthesis import Synthesizer, build_text_pipeline

SIZE = 32
NAN = math.nan


def save_their_layout(root: Path, inpainting: bool = False) -> Path:
    """A tiny Text2Earth folder as released.

    model_index.json declaring PNDM, a DDIM scheduler config, an SD-2-base UNet config with
    a timestep class embedding (9 input channels for the inpainting model).
    """
    parts = tiny_text2earth_parts(0, SIZE, inpainting)
    build_text_pipeline(parts).save_pretrained(root)
    index = json.loads((root / 'model_index.json').read_text())
    index['_class_name'] = (
        'StableDiffusionInpaintPipeline' if inpainting else 'StableDiffusionPipeline'
    )
    index['scheduler'] = ['diffusers', 'PNDMScheduler']
    (root / 'model_index.json').write_text(json.dumps(index))
    ddim = DDIMScheduler.from_config(parts.scheduler.config, steps_offset=1)
    ddim.save_pretrained(root / 'scheduler')
    config = json.loads((root / 'unet' / 'config.json').read_text())
    config['_name_or_path'] = 'stabilityai/stable-diffusion-2-base'
    (root / 'unet' / 'config.json').write_text(json.dumps(config))
    return root


@pytest.fixture(scope='module')
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_their_layout(tmp_path_factory.mktemp('Text2Earth'))


@pytest.fixture(scope='module')
def synth(folder: Path) -> Synthesizer:
    return Synthesizer.from_pretrained(folder, num_inference_steps=3, default_size=(SIZE, SIZE))


def test_their_layout_loads_with_stock_classes(folder: Path, synth: Synthesizer) -> None:
    config = json.loads((folder / 'unet' / 'config.json').read_text())
    assert config['class_embed_type'] == 'timestep' and config['in_channels'] == 4
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder='unet')
    assert type(unet) is UNet2DConditionModel and unet.class_embedding is not None
    assert type(AutoencoderKL.from_pretrained(folder, subfolder='vae')) is AutoencoderKL
    assert type(CLIPTextModel.from_pretrained(folder, subfolder='text_encoder')) is CLIPTextModel
    assert is_text2earth(folder) and is_text2earth('lcybuaa/Text2Earth')
    assert not is_text2earth(folder / 'unet')
    assert synth.takes('levels') and synth.takes('metadata') and not synth.takes('mask')
    assert type(synth.pipeline.unet) is UNet2DConditionModel
    # their README's sampling: Euler, 50 steps, guidance 4.0, 256 px
    defaults = Synthesizer.from_pretrained(folder)
    assert isinstance(defaults.pipeline.scheduler, EulerDiscreteScheduler)
    assert (defaults.num_inference_steps, defaults.guidance_scale) == (50, 4.0)
    assert defaults.default_size == (256, 256)
    saved = unet.state_dict()['class_embedding.linear_2.weight']
    assert torch.equal(synth.pipeline.unet.state_dict()['class_embedding.linear_2.weight'], saved)


def test_gsd_to_level_is_their_formula() -> None:
    levels = torch.tensor(list(TEXT2EARTH_LEVELS))
    gsd = torch.tensor([2.0 ** (17 - level) for level in TEXT2EARTH_LEVELS])
    assert torch.equal(gsd_to_level(gsd), levels)
    assert [level_to_gsd(level) for level in (10, 16, 17, 18)] == [128.0, 2.0, 1.0, 0.5]
    # nearest in log scale (0.7 m: 0.5 m, 90 m: 64 m); unknown -> 0
    values = torch.tensor([0.6, 0.7, 3.0, 90.0, 0.3, 200.0, NAN])
    assert gsd_to_level(values).tolist() == [18, 18, 15, 11, 18, 10, 0]
    for bad in (0.1, 300.0, -1.0, 0.0):
        with pytest.raises(ValueError, match=r'gsd of sample 1: .* outside'):
            gsd_to_level(torch.tensor([1.0, bad]))


def test_levels_from_metadata_or_explicit() -> None:
    metadata = torch.full((3, 7), NAN)
    metadata[:, 2] = torch.tensor([2.0, NAN, 30.0])
    assert resolution_levels(3, metadata=metadata).tolist() == [16, 0, 12]
    assert resolution_levels(2).tolist() == [0, 0]
    assert resolution_levels(2, [18, 0]).tolist() == [18, 0]
    with pytest.raises(ValueError, match='not both'):
        resolution_levels(3, [16] * 3, metadata)
    for bad in ([9], [19], [-1], [16.5]):
        with pytest.raises(ValueError, match=r'0 \(unknown resolution\) or 10..18|integers'):
            resolution_levels(1, bad)
    with pytest.raises(ValueError, match='expected 2 levels'):
        resolution_levels(2, [16])
    assert split_level_prompt('16_GOOGLE_LEVEL_Seven circular farmlands') == (
        16,
        'Seven circular farmlands',
    )
    assert split_level_prompt('a lake') == (0, 'a lake')
    with pytest.raises(ValueError, match=r'levels\[0\] = 25'):
        split_level_prompt('25_GOOGLE_LEVEL_a lake')


def test_level_changes_the_output(synth: Synthesizer) -> None:
    prompts = ['dense forest'] * 2
    coarse = synth.generate(None, prompts, [3, 4], levels=[10, 10])
    fine = synth.generate(None, prompts, [3, 4], levels=[18, 18])
    assert coarse.shape == (2, 3, SIZE, SIZE) and coarse.dtype == torch.float32
    assert (coarse - fine).abs().mean() > 0.5
    # metadata's GSD gives the nearest level: 0.5 m is level 18
    metadata = torch.full((2, 7), NAN)
    metadata[:, 2] = 0.5
    torch.testing.assert_close(synth.generate(None, prompts, [3, 4], metadata=metadata), fine)


def test_level_zero_is_the_unconditional_label(synth: Synthesizer) -> None:
    seen: list[torch.Tensor] = []

    def record(_: Any, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        seen.append(kwargs['class_labels'])

    # a forward hook sees the call's keywords after the synthesizer's pre-hook added them
    handle = synth.pipeline.unet.register_forward_hook(record, with_kwargs=True)
    try:
        synth.generate(None, ['a', 'b'], levels=[16, 0])
    finally:
        handle.remove()
    # [unconditional, conditional]: the unconditional branch is always level 0
    assert all(labels.tolist() == [0, 0, 16, 0] for labels in seen) and len(seen) == 3
    # no level, no metadata: level 0, as their pipeline given a prompt without the prefix
    torch.testing.assert_close(
        synth.generate(None, ['a'], [5]), synth.generate(None, ['a'], [5], levels=[0])
    )


def their_sampling(synth: Synthesizer, prompt: str, level: int, seed: int) -> torch.Tensor:
    """Their pipeline's loop: Euler, CFG over [("", 0), (prompt, level)], VAE decode."""
    pipe = synth.pipeline
    scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(3)
    embeds = torch.cat([synth.prompts(['']), synth.prompts([prompt])])
    latents = torch.randn(1, 4, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(seed))
    latents = latents * scheduler.init_noise_sigma
    labels = torch.tensor([0.0, level])
    with torch.no_grad():
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
            noise = pipe.unet(model_input, t, embeds, class_labels=labels).sample
            uncond, cond = noise.chunk(2)
            noise = uncond + synth.guidance_scale * (cond - uncond)
            latents = scheduler.step(noise, t, latents).prev_sample
        image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    return (image / 2 + 0.5).clamp(0, 1) * 255


def test_generate_equals_their_computation(folder: Path) -> None:
    synth = Synthesizer.from_pretrained(folder, num_inference_steps=3, default_size=(SIZE, SIZE))
    ours = synth.generate(None, ['a river'], [21], levels=[13])
    torch.testing.assert_close(ours, their_sampling(synth, 'a river', 13, 21), atol=1e-3, rtol=0)
    other_level = their_sampling(synth, 'a river', 17, 21)
    assert (ours - other_level).abs().mean() > 0.1  # the comparison can tell levels apart


def test_bad_requests_are_refused(synth: Synthesizer, folder: Path) -> None:
    with pytest.raises(ValueError, match='GOOGLE_LEVEL_" prefix'):
        synth.generate(None, ['16_GOOGLE_LEVEL_a lake'])
    with pytest.raises(ValueError, match=r'levels\[1\] = 20'):
        synth.generate(None, ['a', 'b'], levels=[16, 20])
    with pytest.raises(ValueError, match='takes no masks'):
        synth.generate(torch.zeros(1, SIZE, SIZE, dtype=torch.long), ['a'])
    earthsynth = Synthesizer.tiny(image_size=SIZE, num_inference_steps=1)
    with pytest.raises(ValueError, match='takes no resolution levels'):
        earthsynth.generate(torch.zeros(1, SIZE, SIZE, dtype=torch.long), ['a'], levels=[16])
    with pytest.raises(ValueError, match='complete'):
        Synthesizer.from_pretrained(folder, base=folder)
    with pytest.raises(ValueError, match="only 'text2earth' is named"):
        Synthesizer.from_pretrained(folder, family='diffusionsat')  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='family must be one of'):
        Synthesizer.tiny(family='text2moon')  # type: ignore[arg-type]


def test_inpainting_folder_needs_an_image(tmp_path: Path) -> None:
    folder = save_their_layout(tmp_path / 'Text2Earth-inpainting', inpainting=True)
    synth = Synthesizer.from_pretrained(folder, num_inference_steps=1)
    assert synth.takes('levels') and 'image' in synth.needs
    assert synth.pipeline.unet.config.in_channels == 9
    with pytest.raises(ValueError, match=r'inpainting model .* needs image'):
        synth.generate(None, ['a lake'])
