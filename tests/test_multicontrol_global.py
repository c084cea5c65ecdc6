# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The global content condition (a reference image, through diffusers' IP-Adapter)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from safetensors.torch import load_file

from torchgeo_earthsynth.controls import ControlExtractor
from torchgeo_earthsynth.lightning_modules import MultiControlNetTask
from torchgeo_earthsynth.models import (
    IP_ADAPTER_WEIGHTS,
    TINY_IMAGE_DIM,
    DiffusionSatControlNet,
    add_global_content,
    encode_reference,
    fresh_ip_adapter,
    has_global_content,
    ip_adapter_modules,
    save_ip_adapter,
    tiny_image_encoder,
)
from torchgeo_earthsynth.synthesis import Synthesizer

SIZE = 32
BATCH = 2
REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / 'configs' / 'multicontrol_global_tiny.yaml'
PROMPTS = ['a satellite image'] * BATCH


def generate(synth: Synthesizer, **kwargs: Any) -> torch.Tensor:
    return synth.generate(None, PROMPTS, size=(SIZE, SIZE), **kwargs)


@pytest.fixture(scope='module')
def plain() -> tuple[Synthesizer, torch.Tensor]:
    """A tiny multi-condition synthesizer, its ControlNets with an effect, and its output."""
    synth = Synthesizer.tiny(image_size=SIZE, family='multicontrol', num_inference_steps=2)
    generator = torch.Generator().manual_seed(0)
    for net in synth.pipeline.controlnet.nets:
        for weight in (*net.controlnet_down_blocks.parameters(), net.controlnet_mid_block.weight):
            weight.data = torch.randn(weight.shape, generator=generator) * 0.5
    return synth, generate(synth)


@pytest.fixture(scope='module')
def synth(plain: tuple[Synthesizer, torch.Tensor]) -> Synthesizer:
    """The same synthesizer with a fresh IP-Adapter and a tiny CLIP vision model."""
    synth = plain[0]
    add_global_content(synth.pipeline, tiny_image_encoder(0, SIZE))
    with torch.no_grad():  # a fresh adapter is weak: give it the effect of a trained one
        for module in ip_adapter_modules(synth.pipeline.unet)[1:]:
            module.to_v_ip[0].weight.mul_(4)
    return synth


@pytest.fixture(scope='module')
def reference() -> torch.Tensor:
    """Two different scenes: noise and a dark colour ramp."""
    noise = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(2)) * 255
    ramp = torch.linspace(0, 80, SIZE).expand(3, SIZE, SIZE)
    return torch.stack([noise, ramp])


def test_no_reference_or_scale_zero_is_the_model_without_it(
    plain: tuple[Synthesizer, torch.Tensor], synth: Synthesizer, reference: torch.Tensor
) -> None:
    assert synth.takes('reference') and has_global_content(synth.pipeline.unet)
    before = plain[1]  # generated before the adapter was added
    assert torch.equal(generate(synth), before)
    assert torch.equal(generate(synth, reference=reference, reference_scale=0.0), before)
    on = generate(synth, reference=reference)
    half = generate(synth, reference=reference, reference_scale=0.5)
    assert (on - before).abs().mean() > 1
    assert 0 < (half - before).abs().mean() < (on - before).abs().mean()
    # another reference, another image; a sample depends on its own reference only
    other = generate(synth, reference=reference.flip(0))
    assert (other - on).abs().mean() > 0.1
    same = generate(synth, reference=reference[[0, 0]])
    assert torch.equal(same[0], on[0]) and (same[1] - on[1]).abs().mean() > 0.1
    # embeddings give what the images give
    embeds = encode_reference(synth.pipeline.image_encoder, reference)
    assert embeds.shape == (BATCH, TINY_IMAGE_DIM)
    torch.testing.assert_close(generate(synth, reference=embeds), on)


def test_reference_with_any_subset_of_controls(synth: Synthesizer, reference: torch.Tensor) -> None:
    mask = torch.randint(0, 12, (BATCH, SIZE, SIZE), generator=torch.Generator().manual_seed(3))
    controls = ControlExtractor(['seg', 'road'])({'mask': mask})
    maps_only = generate(synth, controls=controls)
    both = generate(synth, controls=controls, reference=reference)
    assert (both - maps_only).abs().mean() > 1
    zero = generate(synth, controls=controls, reference=reference, reference_scale=0.0)
    assert torch.equal(zero, maps_only)
    seg_zero = generate(synth, controls=controls, control_scales={'seg': 0.0}, reference=reference)
    assert torch.equal(
        seg_zero, generate(synth, controls={'road': controls['road']}, reference=reference)
    )
    samples = synth.synthesize(None, PROMPTS, controls=controls, reference=reference)
    assert torch.equal(torch.stack([s['image'] for s in samples]), both)


def test_bad_references_are_refused(synth: Synthesizer, reference: torch.Tensor) -> None:
    with pytest.raises(
        ValueError, match=r'CLIP image embeddings \[2, 16\] for 2 prompts, got \[2, 8\]'
    ):
        generate(synth, reference=torch.zeros(BATCH, 8))
    with pytest.raises(ValueError, match='got \\[1, 3, 32, 32\\]'):
        generate(synth, reference=reference[:1])
    bare = Synthesizer.tiny(image_size=SIZE, family='multicontrol', num_inference_steps=1)
    with pytest.raises(ValueError, match='takes no reference'):
        generate(bare, reference=reference)
    state = fresh_ip_adapter(bare.pipeline.unet, TINY_IMAGE_DIM)
    add_global_content(bare.pipeline, None, state)  # no image encoder: embeddings only
    with pytest.raises(ValueError, match='need the pipeline image_encoder'):
        generate(bare, reference=reference)
    assert generate(bare, reference=torch.zeros(BATCH, TINY_IMAGE_DIM)).shape == (
        BATCH,
        3,
        SIZE,
        SIZE,
    )


def test_ip_adapter_file_loads_with_diffusers_load_ip_adapter(
    synth: Synthesizer, reference: torch.Tensor, tmp_path: Path
) -> None:
    path = tmp_path / IP_ADAPTER_WEIGHTS
    save_ip_adapter(synth.pipeline.unet, path)
    keys = set(load_file(str(path)))
    assert {
        'image_proj.proj.weight',
        'image_proj.norm.weight',
        'ip_adapter.1.to_k_ip.weight',
    } <= keys
    assert 'ip_adapter.7.to_v_ip.weight' in keys and len(keys) == 4 + 4 * 2  # 4 cross-attentions
    fresh = Synthesizer.tiny(image_size=SIZE, family='multicontrol', num_inference_steps=2)
    for ours, theirs in zip(synth.pipeline.controlnet.nets, fresh.pipeline.controlnet.nets):
        theirs.load_state_dict(ours.state_dict())
    fresh.pipeline.register_modules(image_encoder=synth.pipeline.image_encoder)
    fresh.pipeline.load_ip_adapter(
        str(tmp_path), subfolder='', weight_name=IP_ADAPTER_WEIGHTS, low_cpu_mem_usage=False
    )
    torch.testing.assert_close(
        generate(fresh, reference=reference), generate(synth, reference=reference)
    )


@pytest.fixture
def batch(mini_batch: dict[str, Any]) -> dict[str, Any]:
    return mini_batch


def test_task_trains_the_adapter_on_each_sample_own_image(batch: dict[str, Any]) -> None:
    task = MultiControlNetTask(image_size=SIZE, global_content=True, reference_dropout=0.5)
    assert task.reference_encoder is not None and has_global_content(task.unet)
    assert not any(p.requires_grad for p in task.reference_encoder.parameters())
    task.eval()
    inputs = task.condition_inputs(batch, (SIZE, SIZE))
    expected = encode_reference(task.reference_encoder, batch['image'])
    torch.testing.assert_close(inputs['reference'], expected)  # the sample's own image
    task.train()
    assert not task.reference_encoder.training
    torch.manual_seed(0)
    drawn = torch.cat([task.condition_inputs(batch, (SIZE, SIZE))['reference'] for _ in range(25)])
    dropped = (drawn == 0).all(1).float()
    assert 0.3 < dropped.mean() < 0.7  # per sample, p = 0.5, to the zero embedding
    # the adapter trains (once, though the tiny UNet trains too and holds it)
    params = task.trained_parameters()
    assert len({id(p) for p in params}) == len(params)
    adapter = list(ip_adapter_modules(task.unet).parameters())
    assert {id(p) for p in adapter} <= {id(p) for p in params}
    task.hparams['reference_dropout'] = 0.0
    task.diffusion_loss(batch).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter)
    # without a reference, forward takes the zero embedding (a dropped one)
    task.eval()
    noisy = torch.randn(4, 4, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(1))
    steps, text = torch.tensor([10, 300, 600, 900]), torch.randn(4, 77, 32)
    maps = {k: v for k, v in inputs.items() if k != 'reference'}
    with torch.no_grad():
        none = task(noisy, steps, text, **maps)
        zeros = task(noisy, steps, text, **maps, reference=torch.zeros_like(expected))
        given = task(noisy, steps, text, **inputs)
    assert torch.equal(none, zeros) and (given - none).abs().amax() > 1e-3
    plain = MultiControlNetTask(image_size=SIZE)
    assert plain.reference_encoder is None and not has_global_content(plain.unet)
    with pytest.raises(ValueError, match='reference with global_content only'):
        plain(noisy, steps, text, **maps, reference=expected)
    with pytest.raises(ValueError, match=r'reference_dropout must be in \[0, 1\]'):
        MultiControlNetTask(reference_dropout=-0.1)


def test_checkpoints_keep_the_adapter_of_a_frozen_unet() -> None:
    task = MultiControlNetTask(image_size=SIZE, global_content=True, train_unet=False)
    # as the pretrained preset: the frozen base and CLIP are not checkpointed
    task._frozen_prefixes = lambda: ('vae.', 'text_encoder.', 'unet.', 'reference_encoder.')  # type: ignore[method-assign]
    task.trainer = pl.Trainer(accelerator='cpu', logger=False, enable_checkpointing=False)
    checkpoint: dict[str, Any] = {'state_dict': task.state_dict()}
    task.on_save_checkpoint(checkpoint)
    keys = set(checkpoint['state_dict'])
    assert 'unet.conv_in.weight' not in keys and not any('reference_encoder.' in k for k in keys)
    adapter = [k for k in keys if k.startswith('unet.') and ('_ip.' in k or 'hid_proj' in k)]
    assert len(adapter) == 4 * 2 + 4  # every cross-attention's image keys/values, the projection
    assert any(k.startswith('controlnet.') for k in keys)


def test_cli_fit_yaml_export_round_trip_with_metadata(
    tmp_path: Path, batch: dict[str, Any], fit_fast: Callable[..., Path]
) -> None:
    fit_fast(CONFIG)
    export = tmp_path / 'export'
    meta = json.loads((export / 'earthsynth.json').read_text())
    assert meta['global_content'] and meta['controls'] == ['seg', 'edges']
    assert (export / 'image_encoder' / 'config.json').exists()
    assert 'reference=images' in (export / 'README.md').read_text()
    unet_keys = load_file(str(export / 'unet' / 'diffusion_pytorch_model.safetensors'))
    assert not any('_ip.' in k or 'hid_proj' in k for k in unet_keys)  # a plain SD UNet
    synth = Synthesizer.from_pretrained(export, num_inference_steps=2, guidance_scale=2.0)
    assert synth.takes('reference') and synth.pipeline.image_encoder is not None

    controls = ControlExtractor(['seg', 'edges'])(batch)
    prompts, images = list(batch['prompt']), batch['image']

    def run(**kwargs: Any) -> torch.Tensor:
        return synth.generate(None, prompts, seeds=range(4), size=(SIZE, SIZE), **kwargs)

    maps_only = run(controls=controls)
    with_reference = run(controls=controls, reference=images)
    assert torch.equal(run(controls=controls, reference=images, reference_scale=0.0), maps_only)
    assert (with_reference - maps_only).abs().mean() > 0.02
    # the metadata trained too: every ControlNet takes it, with its embeddings moved from zero
    nets = synth.pipeline.controlnet.nets
    assert synth.takes('metadata') and all(isinstance(net, DiffusionSatControlNet) for net in nets)
    assert all(e.linear_2.weight.abs().sum() > 0 for n in nets for e in n.metadata_embedding)
    metadata = batch['metadata'].roll(1, 0)  # another scene's place and date
    with_metadata = run(controls=controls, reference=images, metadata=metadata)
    assert (with_metadata - with_reference).abs().amax() > 0.01
    # the export starts a new run with its adapter
    task = MultiControlNetTask(
        controlnet=str(export), image_size=SIZE, global_content=True, metadata=True
    )
    ours = ip_adapter_modules(task.unet)[1].to_k_ip[0].weight
    theirs = ip_adapter_modules(synth.pipeline.unet)[1].to_k_ip[0].weight
    assert torch.equal(ours, theirs)
    assert isinstance(task.controlnet.nets[0], DiffusionSatControlNet)
