# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""EarthSynth's mask ControlNet with DiffusionSat's metadata: trained from YAML, exported, used."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from torchgeo_earthsynth.datamodules import EarthSynthMiniDataModule
from torchgeo_earthsynth.lightning_modules import MetadataControlNet
from torchgeo_earthsynth.models import (
    DiffusionSatControlNet,
    find_diffusionsat_controlnet,
    normalize_metadata,
)
from torchgeo_earthsynth.synthesis import Synthesizer

SIZE = 32
REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / 'configs' / 'earthsynth_metadata_tiny.yaml'
#: Paris, 0.5 m, June 2021 and the same in December.
SUMMER = torch.tensor([[2.35, 48.85, 0.5, 0.0, 2021, 6, 15]])
WINTER = torch.tensor([[2.35, 48.85, 0.5, 0.0, 2021, 12, 15]])


def test_condition_and_gradients(tmp_path: Path) -> None:
    datamodule = EarthSynthMiniDataModule(
        root=tmp_path, tile_size=SIZE, num_train=4, num_val=4, batch_size=4, normalize=False
    )
    datamodule.setup('fit')
    batch = next(iter(datamodule.train_dataloader()))
    task = MetadataControlNet(image_size=SIZE, metadata_dropout=0.0)
    assert isinstance(task.controlnet, DiffusionSatControlNet)
    assert task.hparams['metadata_dropout'] == 0.0 and task.hparams['image_size'] == SIZE
    task.train()
    inputs = task.condition_inputs(batch, (SIZE, SIZE))
    assert inputs['condition'].shape == (4, 3, SIZE, SIZE)
    torch.testing.assert_close(inputs['metadata'], normalize_metadata(batch['metadata']))
    controlnet = task.controlnet
    for zero_conv in (*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block):
        torch.nn.init.normal_(zero_conv.weight, std=0.1)  # as after a first step
    task.diffusion_loss(batch).backward()
    assert controlnet.metadata_embedding is not None
    # zero-initialised output layers: gradients reach them first
    assert all(e.linear_2.weight.grad.abs().sum() > 0 for e in controlnet.metadata_embedding)
    with pytest.raises(ValueError, match=r'MetadataControlNet needs batches with metadata'):
        task.condition_inputs({'mask': batch['mask'], 'prompt': batch['prompt']}, (SIZE, SIZE))
    with pytest.raises(ValueError, match=r'metadata_dropout must be in \[0, 1\]'):
        MetadataControlNet(metadata_dropout=-0.1)


def test_cli_fit_yaml_and_export_generates_with_metadata(
    tmp_path: Path, fit_fast: Callable[..., Path]
) -> None:
    fit_fast(CONFIG)
    export = tmp_path / 'export'
    assert (export / 'controlnet' / 'config.json').exists()
    assert find_diffusionsat_controlnet(export) is None  # a mask ControlNet, not their SR one
    synth = Synthesizer.from_pretrained(export, num_inference_steps=2, guidance_scale=2.0)
    controlnet = synth.pipeline.controlnet
    assert isinstance(controlnet, DiffusionSatControlNet)
    assert synth.takes('mask') and synth.takes('metadata')
    assert controlnet.metadata_embedding is not None
    # trained: the zero-initialised output layers moved
    assert all(e.linear_2.weight.abs().sum() > 0 for e in controlnet.metadata_embedding)

    masks = torch.zeros(3, SIZE, SIZE, dtype=torch.long)
    masks[:, : SIZE // 2] = 2  # grass
    prompts = ['A satellite image of grass'] * 3
    unknown = torch.full((1, 7), math.nan)
    metadata = torch.cat([SUMMER, WINTER, unknown])
    images = synth.generate(masks, prompts, seeds=[0, 0, 0], metadata=metadata)
    assert images.shape == (3, 3, SIZE, SIZE)
    assert (images[0] - images[1]).abs().amax() > 0.03  # metadata steers the image
    # NaN everywhere is DiffusionSat's unconditional metadata, as no metadata at all
    without = synth.generate(masks[:1], prompts[:1], seeds=[0])
    torch.testing.assert_close(images[2:], without, rtol=0, atol=1e-2)  # batching noise
    # a NaN field is that field dropped: month unknown differs from June
    no_month = SUMMER.clone()
    no_month[0, 5] = math.nan
    dropped = synth.generate(masks[:1], prompts[:1], seeds=[0], metadata=no_month)
    assert (dropped - images[:1]).abs().amax() > 0.03
