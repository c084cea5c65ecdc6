# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Multi-condition generation: one ControlNet per named control, any subset, per-control scales."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import ControlNetModel

from torchgeo_earthsynth.controls import CONTROL_NAMES, ControlExtractor
from torchgeo_earthsynth.families.multicontrol import controls_from_masks
from torchgeo_earthsynth.models import MULTICONTROL_CONFIG, NamedMultiControlNet, is_multicontrol
from torchgeo_earthsynth.synthesis import Synthesizer
from torchgeo_earthsynth.transforms.synthetic_generation import generate_on_device
from torchgeo_earthsynth.vocabulary import CLASS_IDS

SIZE = 32
BATCH = 2
USED = ('road', 'depth', 'seg')


@pytest.fixture(scope='module')
def synth() -> Synthesizer:
    synth = Synthesizer.tiny(image_size=SIZE, family='multicontrol', num_inference_steps=2)
    # untrained ControlNets end in zero convolutions (no effect): give them one
    generator = torch.Generator().manual_seed(0)
    for net in synth.pipeline.controlnet.nets:
        for block in (net.controlnet_down_blocks, net.controlnet_mid_block):
            for weight in block.parameters():
                weight.data = torch.randn(weight.shape, generator=generator) * 0.5
    return synth


@pytest.fixture(scope='module')
def controls() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    mask = torch.randint(0, 12, (BATCH, SIZE // 4, SIZE // 4), generator=generator)
    dem = torch.rand(BATCH, SIZE, SIZE, generator=generator) * 1000
    batch = {'mask': mask.repeat_interleave(4, -1).repeat_interleave(4, -2), 'dem': dem}
    return ControlExtractor(USED)(batch)


def generate(synth: Synthesizer, **kwargs: object) -> torch.Tensor:
    return synth.generate(None, ['a satellite image'] * BATCH, size=(SIZE, SIZE), **kwargs)  # type: ignore[arg-type]


def test_family(synth: Synthesizer) -> None:
    assert synth.takes('controls') and not synth.takes('mask') and not synth.takes('metadata')
    assert synth.pipeline.controlnet.names == CONTROL_NAMES


@pytest.fixture(scope='module')
def all_on(synth: Synthesizer, controls: dict[str, torch.Tensor]) -> torch.Tensor:
    return generate(synth, controls=controls)


@pytest.mark.parametrize('name', ['road', 'seg'])
def test_scale_zero_equals_the_run_without_it_and_on_changes_it(
    synth: Synthesizer, controls: dict[str, torch.Tensor], all_on: torch.Tensor, name: str
) -> None:
    others = {key: value for key, value in controls.items() if key != name}
    without = generate(synth, controls=others)
    zero = generate(synth, controls=controls, control_scales={name: 0.0})
    assert torch.equal(zero, without)
    assert (all_on - without).abs().mean() > 1


def test_scale_sets_the_strength(
    synth: Synthesizer, controls: dict[str, torch.Tensor], all_on: torch.Tensor
) -> None:
    without = generate(synth, controls={'road': controls['road']})
    half = generate(synth, controls=controls, control_scales={'depth': 0.5, 'seg': 0.5})
    assert 0 < (half - without).abs().mean() < (all_on - without).abs().mean()


def test_no_control_is_the_base_model_alone(
    synth: Synthesizer, controls: dict[str, torch.Tensor], all_on: torch.Tensor
) -> None:
    alone = generate(synth)
    assert alone.shape == (BATCH, 3, SIZE, SIZE)
    scaled_out = generate(synth, controls=controls, control_scales=dict.fromkeys(USED, 0.0))
    assert torch.equal(alone, scaled_out)
    # synthesize passes the controls on; the default size is the controls'
    samples = synth.synthesize(None, ['a satellite image'] * BATCH, controls=controls)
    assert torch.equal(torch.stack([sample['image'] for sample in samples]), all_on)


def test_bad_requests_name_the_known_controls(
    synth: Synthesizer, controls: dict[str, torch.Tensor]
) -> None:
    with pytest.raises(ValueError, match=r"unknown \['roads'\]; this model takes \['edges'"):
        generate(synth, controls={'roads': controls['road']})
    with pytest.raises(ValueError, match='control_scales: unknown'):
        generate(synth, controls=controls, control_scales={'dem': 1.0})
    with pytest.raises(ValueError, match=r"controls\['seg'\]: expected float \[2, 3, H, W\]"):
        generate(synth, controls={'seg': controls['road']})
    with pytest.raises(ValueError, match='takes no masks'):
        synth.generate(torch.zeros(BATCH, SIZE, SIZE, dtype=torch.long), ['a'] * BATCH)
    plain = Synthesizer.tiny(image_size=SIZE, num_inference_steps=1)
    with pytest.raises(ValueError, match='takes no controls'):
        plain.generate(torch.zeros(1, SIZE, SIZE, dtype=torch.long), ['a'], controls=controls)


def test_named_multicontrol_saves_and_loads(synth: Synthesizer, tmp_path: Path) -> None:
    model = synth.pipeline.controlnet
    model.save_pretrained(tmp_path / 'controlnet')
    assert is_multicontrol(tmp_path) and (tmp_path / 'controlnet' / MULTICONTROL_CONFIG).exists()
    loaded = NamedMultiControlNet.from_pretrained(tmp_path / 'controlnet')
    assert loaded.names == model.names
    for ours, theirs in zip(model.nets, loaded.nets, strict=True):
        assert isinstance(theirs, ControlNetModel)
        assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))
    (tmp_path / 'controlnet' / MULTICONTROL_CONFIG).write_text('{"controls": ["road", "x"]}')
    with pytest.raises(ValueError, match=r"for controls \['x'\]"):
        NamedMultiControlNet.from_pretrained(tmp_path / 'controlnet')
    with pytest.raises(ValueError, match='at least one'):
        NamedMultiControlNet({})


def test_from_pretrained_detects_a_multicontrol_folder(
    synth: Synthesizer, controls: dict[str, torch.Tensor], all_on: torch.Tensor, tmp_path: Path
) -> None:
    pipeline = synth.pipeline
    for part in ('unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler'):  # beside controlnet/
        getattr(pipeline, part).save_pretrained(tmp_path / part)
    pipeline.controlnet.save_pretrained(tmp_path / 'controlnet')
    loaded = Synthesizer.from_pretrained(tmp_path, num_inference_steps=2, guidance_scale=3.0)
    assert loaded.takes('controls') and loaded.pipeline.controlnet.names == CONTROL_NAMES
    assert torch.allclose(generate(loaded, controls=controls), all_on, atol=1e-3)


def test_augmentation_draws_from_the_maps_the_masks_give(synth: Synthesizer) -> None:
    masks = torch.zeros(BATCH, SIZE, SIZE, dtype=torch.long)
    masks[:, 10:14] = CLASS_IDS['road']  # a road across a background scene
    masks[:, 20:] = CLASS_IDS['water']  # and water below it
    prompts = ['a satellite image'] * BATCH
    maps = controls_from_masks(synth.pipeline, masks)
    assert maps.keys() == {'road', 'seg'}  # the model's controls made from a mask
    assert torch.equal(maps['road'][:, 0], (masks == CLASS_IDS['road']).float())
    images = generate_on_device(
        synth, masks, prompts, torch.Generator().manual_seed(3), torch.device('cpu')
    )
    seeds = torch.randint(0, 2**31 - 1, (BATCH,), generator=torch.Generator().manual_seed(3))
    with_maps = synth.generate(None, prompts, seeds.tolist(), (SIZE, SIZE), controls=maps)
    assert torch.equal(images, with_maps)
    assert (images - synth.generate(None, prompts, seeds.tolist(), (SIZE, SIZE))).abs().mean() > 1
    plain = Synthesizer.tiny(image_size=SIZE, num_inference_steps=1)
    assert controls_from_masks(plain.pipeline, masks) == {}
