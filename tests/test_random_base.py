# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Random-weight bases of the published architectures, and loading float16 bases."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchgeo_earthsynth.models import pretrained_parts
from torchgeo_earthsynth.models.random_base import BASE_CONFIGS


def test_pretrained_parts_loads_a_float16_folder_in_float32(tiny_half_base: Path) -> None:
    # transformers 5 kept the text encoder float16 while diffusers upcast the rest: the
    # first bf16-mixed step on CPU of configs/sd15.yaml failed with "mixed dtype (CPU)".
    parts = pretrained_parts(tiny_half_base)
    for name in ('unet', 'vae', 'text_encoder'):
        assert getattr(parts, name).dtype == torch.float32, name
    half = pretrained_parts(tiny_half_base, dtype=torch.bfloat16)
    assert half.text_encoder.dtype == half.unet.dtype == torch.bfloat16


@pytest.mark.parametrize(
    ('arch', 'text_width', 'layers', 'prediction'),
    [('sd15', 768, 12, 'epsilon'), ('sd21', 1024, 23, 'v_prediction')],
)
def test_base_configs_are_the_published_ones(
    arch: str, text_width: int, layers: int, prediction: str
) -> None:
    config = BASE_CONFIGS[arch]
    assert config['unet']['cross_attention_dim'] == text_width
    assert config['text_encoder']['hidden_size'] == text_width
    assert config['text_encoder']['num_hidden_layers'] == layers
    assert config['scheduler'].get('prediction_type', 'epsilon') == prediction
    assert config['unet']['block_out_channels'] == (320, 640, 1280, 1280)
    assert config['vae']['block_out_channels'] == (128, 256, 512, 512)
