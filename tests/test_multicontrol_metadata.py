# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The shared metadata condition on the multi-condition family's ControlNets."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from torchgeo_earthsynth.controls import ControlExtractor
from torchgeo_earthsynth.lightning_modules import MultiControlNetTask
from torchgeo_earthsynth.models import (
    DiffusionSatControlNet,
    NamedMultiControlNet,
    normalize_metadata,
)
from torchgeo_earthsynth.synthesis import Synthesizer

SIZE = 32
BATCH = 2
PROMPTS = ['a satellite image'] * BATCH
#: Paris, 0.5 m, June 2021 and the same place in December.
METADATA = torch.tensor(
    [[2.35, 48.85, 0.5, 0.0, 2021, 6, 15], [2.35, 48.85, 0.5, 0.0, 2021, 12, 15]]
)


def with_effect(nets: list[Any], seed: int = 0) -> None:
    """Untrained ControlNets end in zero layers (residuals, metadata): give them an effect."""
    generator = torch.Generator().manual_seed(seed)
    for net in nets:
        for zero in (*net.controlnet_down_blocks, net.controlnet_mid_block):
            zero.weight.data = torch.randn(zero.weight.shape, generator=generator) * 0.5
        for embedding in net.metadata_embedding:
            weight = embedding.linear_2.weight
            weight.data = torch.randn(weight.shape, generator=generator) * 0.5


@pytest.fixture(scope='module')
def controls() -> dict[str, torch.Tensor]:
    mask = torch.randint(0, 12, (BATCH, SIZE, SIZE), generator=torch.Generator().manual_seed(1))
    return ControlExtractor(['seg', 'road'])({'mask': mask})


@pytest.fixture(scope='module')
def synth() -> Synthesizer:
    synth = Synthesizer.tiny(image_size=SIZE, family='multicontrol', num_inference_steps=2)
    nets = synth.pipeline.controlnet.by_name()
    model = NamedMultiControlNet(
        {name: DiffusionSatControlNet.from_controlnet(net) for name, net in nets.items()}
    )
    synth.pipeline.controlnet = model
    return synth


def generate(synth: Synthesizer, **kwargs: Any) -> torch.Tensor:
    return synth.generate(None, PROMPTS, size=(SIZE, SIZE), **kwargs)


def test_metadata_steers_every_controlnet_once_trained(
    synth: Synthesizer, controls: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    assert synth.takes('controls') and synth.takes('metadata')
    # fresh metadata embeddings end in zeros: the ControlNets' output is unchanged
    maps_only = generate(synth, controls=controls)
    assert torch.equal(generate(synth, controls=controls, metadata=METADATA), maps_only)
    with_effect(synth.pipeline.controlnet.nets)
    maps_only = generate(synth, controls=controls)
    on = generate(synth, controls=controls, metadata=METADATA)
    assert (on - maps_only).abs().mean() > 0.1  # metadata changes the output when on
    summer_only = generate(synth, controls=controls, metadata=METADATA[[0, 0]])
    assert torch.equal(summer_only[0], on[0]) and (summer_only[1] - on[1]).abs().mean() > 0.1
    # absent metadata is all fields unknown
    unknown = torch.full((BATCH, 7), math.nan)
    assert torch.equal(generate(synth, controls=controls, metadata=unknown), maps_only)
    # each ControlNet takes it: the road map alone still follows the metadata
    road = {'road': controls['road']}
    assert (
        generate(synth, controls=road, metadata=METADATA) - generate(synth, controls=road)
    ).abs().mean() > 0.1
    # with no map at all, no ControlNet runs: the metadata has nothing to steer
    assert torch.equal(generate(synth, metadata=METADATA), generate(synth))
    # saved and loaded, each ControlNet keeps its metadata embeddings
    synth.pipeline.controlnet.save_pretrained(tmp_path / 'controlnet')
    for part in ('unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler'):
        getattr(synth.pipeline, part).save_pretrained(tmp_path / part)
    loaded = Synthesizer.from_pretrained(tmp_path, num_inference_steps=2, guidance_scale=3.0)
    assert all(isinstance(net, DiffusionSatControlNet) for net in loaded.pipeline.controlnet.nets)
    reloaded = generate(loaded, controls=controls, metadata=METADATA)
    torch.testing.assert_close(reloaded, on, atol=1e-3, rtol=0)


@pytest.fixture
def batch(mini_batch: dict[str, Any]) -> dict[str, Any]:
    batch = mini_batch
    batch['metadata'] = torch.cat([METADATA, METADATA.flip(0)])
    return batch


def test_task_trains_metadata_embeddings_of_each_controlnet(batch: dict[str, Any]) -> None:
    task = MultiControlNetTask(image_size=SIZE, metadata=True, control_dropout=0.0)
    nets = task.controlnet.nets
    assert all(isinstance(net, DiffusionSatControlNet) for net in nets)
    assert task.controlnet.metadata_nets() == list(nets)
    task.eval()
    inputs = task.condition_inputs(batch, (SIZE, SIZE))
    torch.testing.assert_close(inputs['metadata'], normalize_metadata(batch['metadata']))
    assert task.generation_inputs(batch, 2)['metadata'].shape == (2, 7)
    with_effect(list(nets))  # as after a few steps: the residuals reach the UNet
    task.train()
    task.hparams['metadata_dropout'] = 0.0
    task.diffusion_loss(batch).backward()
    for net in nets:  # the metadata embeddings of every ControlNet train
        assert all(e.linear_2.weight.grad.abs().sum() > 0 for e in net.metadata_embedding)
    task.eval()
    noisy = torch.randn(4, 4, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(1))
    steps, text = torch.tensor([10, 300, 600, 900]), torch.randn(4, 77, 32)
    maps = {k: v for k, v in inputs.items() if k != 'metadata'}
    with torch.no_grad():
        unknown = task(noisy, steps, text, **maps, metadata=torch.zeros(4, 7))  # all dropped
        given = task(noisy, steps, text, **inputs)
        flipped = task(noisy, steps, text, **maps, metadata=inputs['metadata'].roll(1, 0))
    assert (given - unknown).abs().amax() > 1e-3 and (given - flipped).abs().amax() > 1e-3
    del batch['metadata']
    with pytest.raises(ValueError, match='MultiControlNetTask needs batches with metadata'):
        task.condition_inputs(batch, (SIZE, SIZE))
    with pytest.raises(ValueError, match=r'metadata_dropout must be in \[0, 1\]'):
        MultiControlNetTask(metadata_dropout=2.0)
