# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

from __future__ import annotations

import inspect
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
from diffusers import (
    ControlNetModel,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    StableDiffusionControlNetPipeline,
    UNet2DConditionModel,
    UniPCMultistepScheduler,
)

from torchgeo_earthsynth.lightning_modules import EarthSynthControlNet
from torchgeo_earthsynth.models import DiffusionParts, tiny_unet
from torchgeo_earthsynth.synthesis import (
    Synthesizer,
    build_pipeline,
    check_compatible,
    encode_condition,
)
from torchgeo_earthsynth.vocabulary import PALETTE, multi_hot, prompt_from_mask

SIZE = 32
# transformers 4.x builds CLIP's causal mask with torch.full(finfo(float64).min) in float32,
# which overflows (the lowest-direct run has 4.45; diffusers 0.32 does not import with 5.x)
FLOAT64_CLIP = pytest.mark.xfail(
    int(version('transformers').split('.')[0]) < 5,
    reason='transformers 4.x CLIP text encoder cannot run in float64',
    raises=RuntimeError,
    strict=True,
)


def make_masks(n: int, seed: int = 0) -> torch.Tensor:
    """Blocky masks of a few land-cover ids."""
    generator = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 10, (n, SIZE // 8, SIZE // 8), generator=generator)
    return blocks.repeat_interleave(8, -1).repeat_interleave(8, -2)


@pytest.fixture(scope='module')
def synth() -> Synthesizer:
    return Synthesizer.tiny(image_size=SIZE, num_inference_steps=2, guidance_scale=3.0)


@pytest.fixture(scope='module')
def masks() -> torch.Tensor:
    return make_masks(3)


@pytest.fixture(scope='module')
def prompts(masks: torch.Tensor) -> list[str]:
    return [prompt_from_mask(m) for m in masks]


def test_encode_condition() -> None:
    mask = torch.tensor([[[0, 5], [66, 7]]])
    grey = encode_condition(mask)
    assert grey.shape == (1, 3, 2, 2) and grey.dtype == torch.float32
    assert torch.allclose(grey[0, :, 1, 0], torch.full((3,), 66 / 255))
    palette = encode_condition(mask, encoding='palette')
    assert torch.allclose(palette[0, :, 0, 1], torch.as_tensor(PALETTE[5]).float() / 255)
    assert encode_condition(mask, size=(4, 4)).shape == (1, 3, 4, 4)
    with pytest.raises(ValueError, match=r'expected masks \[B, H, W\]'):
        encode_condition(mask[0])
    with pytest.raises(ValueError, match="'grey' or 'palette'"):
        encode_condition(mask, encoding='rgb')  # type: ignore[arg-type]


def test_generate_shapes_dtype_range(
    synth: Synthesizer, masks: torch.Tensor, prompts: list[str]
) -> None:
    images = synth.generate(masks, prompts, seeds=[1, 2, 3])
    assert images.shape == (3, 3, SIZE, SIZE)
    assert images.dtype == torch.float32
    assert images.device == masks.device
    assert torch.isfinite(images).all()
    assert images.min() >= 0 and images.max() <= 255
    assert images.std() > 1  # not a constant image
    small = synth.generate(masks[:1], prompts[:1], size=(16, 16))
    assert small.shape == (1, 3, 16, 16)


def test_seeds_make_samples_reproducible_on_their_own(
    synth: Synthesizer, masks: torch.Tensor, prompts: list[str]
) -> None:
    batch = synth.generate(masks, prompts, seeds=[5, 6, 7])
    alone = synth.generate(masks[1:2], prompts[1:2], seeds=[6])
    torch.testing.assert_close(alone[0], batch[1], atol=0.05, rtol=0)
    synth.batch_size = 2  # other chunking, same samples
    try:
        chunked = synth.generate(masks, prompts, seeds=torch.tensor([5, 6, 7]))
    finally:
        synth.batch_size = 8
    torch.testing.assert_close(chunked, batch, atol=0.05, rtol=0)
    other = synth.generate(masks[1:2], prompts[1:2], seeds=[60])
    assert (other[0] - batch[1]).abs().mean() > 1
    default = synth.generate(masks, prompts)  # seeds 0..B-1
    torch.testing.assert_close(default, synth.generate(masks, prompts, seeds=[0, 1, 2]))


def test_generate_equals_the_diffusers_pipeline(masks: torch.Tensor, prompts: list[str]) -> None:
    """Synthesizer's promise: what StableDiffusionControlNetPipeline gives for the same inputs."""
    synth = Synthesizer.tiny(image_size=SIZE, num_inference_steps=3)
    assert synth.guidance_scale == 3.0  # the tiny preset's default (7.5 for real weights)
    synth.guidance_scale = 7.5  # Synthesizer's default, as upstream EarthSynth's test.py
    seeds = [11, 12, 13]
    ours = synth.generate(masks, prompts, seeds=seeds)
    # The same modules in a fresh pipeline with its own scheduler, text prompts (encoded by
    # the pipeline, "" as negative) and the grey condition image id/255
    components = {**synth.pipeline.components}
    components['scheduler'] = UniPCMultistepScheduler.from_config(components['scheduler'].config)
    pipe = StableDiffusionControlNetPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    latents = torch.stack(
        [
            torch.randn(4, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(s))
            for s in seeds
        ]
    )

    def theirs(guidance_scale: float) -> torch.Tensor:
        images: torch.Tensor = pipe(
            prompt=prompts,
            image=(masks.float() / 255).unsqueeze(1).expand(-1, 3, -1, -1),
            height=SIZE,
            width=SIZE,
            num_inference_steps=3,
            guidance_scale=guidance_scale,
            latents=latents,
            output_type='pt',
        ).images
        return images * 255

    assert ours.std() > 1  # not a constant image
    torch.testing.assert_close(ours, theirs(7.5), atol=1e-3, rtol=0)
    unguided = theirs(3.0)
    assert (ours - unguided).abs().mean() > 0.1  # the comparison can tell guidance apart


def test_default_guidance_scales() -> None:
    assert inspect.signature(Synthesizer).parameters['guidance_scale'].default == 7.5
    assert Synthesizer.tiny(image_size=SIZE).guidance_scale == 3.0


def test_bad_inputs(synth: Synthesizer, masks: torch.Tensor, prompts: list[str]) -> None:
    with pytest.raises(ValueError, match='3 masks but 2 prompts'):
        synth.generate(masks, prompts[:2])
    with pytest.raises(ValueError, match='3 masks but 1 seeds'):
        synth.generate(masks, prompts, seeds=[1])
    with pytest.raises(ValueError, match=r'expected masks \[B, H, W\]'):
        synth.generate(masks[0], prompts[:1])
    with pytest.raises(ValueError, match='multiple of the VAE downscale factor 2'):
        synth.generate(masks, prompts, size=(15, 16))


@pytest.mark.parametrize(
    ('name', 'cls'),
    [
        ('unipc', UniPCMultistepScheduler),
        ('ddim', DDIMScheduler),
        ('dpm', DPMSolverMultistepScheduler),
        ('euler', EulerDiscreteScheduler),
    ],
)
def test_scheduler_choice(
    synth: Synthesizer, masks: torch.Tensor, prompts: list[str], name: str, cls: type
) -> None:
    other = Synthesizer.tiny(image_size=SIZE, scheduler=name, num_inference_steps=4)
    assert isinstance(other.pipeline.scheduler, cls)
    images = other.generate(masks[:1], prompts[:1], seeds=[1])
    assert torch.isfinite(images).all() and images.shape == (1, 3, SIZE, SIZE)
    # 4 steps: with 2 most multistep solvers reduce to the same first-order update
    unipc = Synthesizer(other.pipeline, num_inference_steps=4, guidance_scale=3.0)
    difference = (images - unipc.generate(masks[:1], prompts[:1], seeds=[1])).abs().mean()
    assert difference == 0 if name == 'unipc' else difference > 0.1


def test_default_scheduler_and_bad_name(synth: Synthesizer) -> None:
    assert isinstance(synth.pipeline.scheduler, UniPCMultistepScheduler)
    with pytest.raises(ValueError, match=r"scheduler must be one of .*'unipc'.* got 'heun'"):
        Synthesizer(synth.pipeline, scheduler='heun')  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='must be >= 1'):
        Synthesizer(synth.pipeline, num_inference_steps=0)


def test_guidance_and_negative_prompt(
    synth: Synthesizer, masks: torch.Tensor, prompts: list[str]
) -> None:
    guided = synth.generate(masks, prompts, seeds=[1, 2, 3])
    plain = Synthesizer(synth.pipeline, num_inference_steps=2, guidance_scale=1.0)
    unguided = plain.generate(masks, prompts, seeds=[1, 2, 3])
    assert (guided - unguided).abs().mean() > 0.5
    assert plain.prompts.hits + plain.prompts.misses == 3  # no negative prompt encoded
    negative = Synthesizer(
        synth.pipeline, num_inference_steps=2, guidance_scale=3.0, negative_prompt='blurry, cloudy'
    )
    steered = negative.generate(masks, prompts, seeds=[1, 2, 3])
    assert (guided - steered).abs().mean() > 0.05
    assert 'blurry, cloudy' in negative.prompts._cache


def test_prompt_cache(synth: Synthesizer, masks: torch.Tensor) -> None:
    prompts = ['A satellite image of road', 'A satellite image of water'] * 2
    four = torch.cat([masks, masks[:1]])
    cached = Synthesizer(synth.pipeline, num_inference_steps=2, guidance_scale=3.0)
    first = cached.generate(four, prompts, seeds=[1, 2, 3, 4])
    # two distinct prompts and the negative one are encoded; the repeats are hits
    assert (cached.prompts.misses, cached.prompts.hits) == (3, 2)
    second = cached.generate(four, prompts, seeds=[1, 2, 3, 4])
    assert (cached.prompts.misses, cached.prompts.hits) == (3, 7)
    torch.testing.assert_close(first, second)
    uncached = Synthesizer(
        synth.pipeline, num_inference_steps=2, guidance_scale=3.0, prompt_cache=False
    )
    torch.testing.assert_close(
        uncached.generate(four, prompts, seeds=[1, 2, 3, 4]), first, atol=1e-3, rtol=0
    )
    assert uncached.prompts.hits == 0 and not uncached.prompts._cache


def test_synthesize_sample_dicts(
    synth: Synthesizer, masks: torch.Tensor, prompts: list[str]
) -> None:
    samples = synth.synthesize(masks, prompts, seeds=[4, 5, 6])
    images = synth.generate(masks, prompts, seeds=[4, 5, 6])
    assert len(samples) == 3
    for sample, mask, prompt, image, seed in zip(samples, masks, prompts, images, [4, 5, 6]):
        assert set(sample) == {'image', 'mask', 'prompt', 'categories', 'source', 'seed'}
        assert torch.equal(sample['mask'], mask) and sample['mask'].dtype == torch.int64
        assert sample['prompt'] == prompt == prompt_from_mask(sample['mask'])
        assert torch.equal(sample['categories'], multi_hot(mask))
        assert sample['categories'].shape == (67,)
        assert sample['source'] == 'synthetic' and sample['seed'] == seed
        torch.testing.assert_close(sample['image'], image)


@pytest.mark.parametrize(
    ('dtype', 'atol'),
    [pytest.param(torch.float64, 0.05, marks=FLOAT64_CLIP), (torch.bfloat16, None)],
)
def test_dtype_on_cpu(
    synth: Synthesizer,
    masks: torch.Tensor,
    prompts: list[str],
    dtype: torch.dtype,
    atol: float | None,
) -> None:
    reference = synth.generate(masks, prompts, seeds=[1, 2, 3])
    other = Synthesizer.tiny(
        image_size=SIZE, num_inference_steps=2, guidance_scale=3.0, dtype=dtype
    )
    assert other.pipeline.unet.dtype == dtype and other.pipeline.text_encoder.dtype == dtype
    images = other.generate(masks, prompts, seeds=[1, 2, 3])
    assert images.dtype == torch.float32 and torch.isfinite(images).all()
    if atol is not None:  # float64: the same images
        torch.testing.assert_close(images, reference, atol=atol, rtol=0)
    else:  # bfloat16: close, within its precision
        assert (images - reference).abs().mean() < 5


def save_base(parts: DiffusionParts, directory: Path) -> Path:
    """A fake Stable Diffusion base folder in diffusers layout."""
    for name in ('unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler'):
        getattr(parts, name).save_pretrained(directory / name)
    return directory


@pytest.fixture(scope='module')
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny EarthSynthControlNet exported as a pipeline, as a ControlNet and as a base."""
    root = tmp_path_factory.mktemp('exports')
    module = EarthSynthControlNet(preset='tiny', image_size=SIZE, condition_encoding='palette')
    return {
        'pipeline': module.save_pretrained(root / 'pipeline'),
        'controlnet_only': module.save_pretrained(root / 'cn', full_pipeline=False),
        'bare': (module.controlnet.save_pretrained(root / 'bare'), root / 'bare')[1],
        'base': save_base(module.parts, root / 'base'),
    }


def test_from_pretrained_pipeline_export(
    exported: dict[str, Path], masks: torch.Tensor, prompts: list[str]
) -> None:
    synth = Synthesizer.from_pretrained(
        exported['pipeline'], num_inference_steps=2, guidance_scale=3.0
    )
    assert synth.condition_encoding == 'palette'  # read from earthsynth.json
    assert isinstance(synth.pipeline.scheduler, UniPCMultistepScheduler)
    images = synth.generate(masks, prompts, seeds=[1, 2, 3])
    from_parts = Synthesizer.from_pretrained(
        exported['bare'],
        base=exported['base'],
        num_inference_steps=2,
        guidance_scale=3.0,
        condition_encoding='palette',
    )
    torch.testing.assert_close(
        from_parts.generate(masks, prompts, seeds=[1, 2, 3]), images, atol=1e-3, rtol=0
    )
    # our ControlNet-only export: the controlnet/ subfolder is found on its own
    subfolder = Synthesizer.from_pretrained(
        exported['controlnet_only'],
        base=exported['base'],
        num_inference_steps=2,
        guidance_scale=3.0,
        condition_encoding='palette',
    )
    torch.testing.assert_close(
        subfolder.generate(masks, prompts, seeds=[1, 2, 3]), images, atol=1e-3, rtol=0
    )


def test_from_pretrained_errors(exported: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"ControlNet checkpoint '.*missing' does not"):
        Synthesizer.from_pretrained(tmp_path / 'missing', base=exported['base'])
    with pytest.raises(FileNotFoundError, match=r"Stable Diffusion base '\./nowhere/sd'"):
        Synthesizer.from_pretrained(exported['bare'], base='./nowhere/sd')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match=r'no config\.json; expected a diffusers ControlNet'):
        Synthesizer.from_pretrained(tmp_path / 'empty', base=exported['base'])
    with pytest.raises(ValueError, match='cannot load the Stable Diffusion base'):
        Synthesizer.from_pretrained(exported['bare'], base=tmp_path / 'empty')
    # a ControlNet made for another base (cross-attention width 16, not 32)
    unet = UNet2DConditionModel.from_config({**tiny_unet(0, 16).config, 'cross_attention_dim': 16})
    other = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    other.save_pretrained(tmp_path / 'other')
    with pytest.raises(
        ValueError,
        match=r"ControlNet '.*other' does not fit the base '.*base'"
        r'.*cross_attention_dim 16 != 32',
    ) as error:
        Synthesizer.from_pretrained(tmp_path / 'other', base=exported['base'])
    assert str(exported['base']) in str(error.value)


def test_check_compatible(synth: Synthesizer) -> None:
    pipe = synth.pipeline
    check_compatible(pipe.controlnet, pipe.unet, pipe.text_encoder)  # fits: no error
    wide = UNet2DConditionModel.from_config(
        {**tiny_unet(0, 16).config, 'block_out_channels': (32, 32)}
    )
    with pytest.raises(ValueError, match=r'block_out_channels \(32, 64\) != \(32, 32\)'):
        check_compatible(pipe.controlnet, wide, None, 'mine', 'theirs')


def test_build_pipeline_shares_modules(synth: Synthesizer) -> None:
    pipe = synth.pipeline
    parts = DiffusionParts(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler)
    rebuilt = build_pipeline(parts, pipe.controlnet)
    assert rebuilt.unet is pipe.unet and rebuilt.controlnet is pipe.controlnet
    assert rebuilt.safety_checker is None
