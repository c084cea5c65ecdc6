# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""DiffusionSat's temporal ControlNet: their layout key for key, their forward on tiny inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import Tensor

from torchgeo_earthsynth.models import (
    DiffusionSatControlNet,
    TemporalControlNet,
    is_temporal_controlnet,
    load_diffusionsat_controlnet,
    load_temporal_controlnet,
)

#: A tiny config in the released model's shape: two levels, two layers each, per-level heads.
TINY: dict[str, Any] = {
    'block_out_channels': (32, 64),
    'down_block_types': ('CrossAttnDownBlock2D', 'DownBlock2D'),
    'layers_per_block': 2,
    'cross_attention_dim': 16,
    'attention_head_dim': (4, 8),
    'norm_num_groups': 8,
    'conditioning_embedding_out_channels': (8, 16),
    'conditioning_in_channels': 3,
    'use_linear_projection': True,
    'num_metadata': 7,
}


def _randomised(model: torch.nn.Module, seed: int = 0) -> None:
    """Random weights everywhere (the zero convolutions would hide every difference)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))


def _inputs(frames: int, seed: int = 1) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        'sample': torch.randn(2, 4, 8, 8, generator=generator),
        'timestep': torch.tensor([10, 500]),
        'encoder_hidden_states': torch.randn(2, 5, 16, generator=generator),
        'controlnet_cond': torch.rand(2, 3, frames, 16, 16, generator=generator),
        'metadata': 1000 * torch.rand(2, 7, generator=generator),
        'cond_metadata': 1000 * torch.rand(2, 7, frames, generator=generator),
    }


def test_state_dict_has_their_names_and_shapes() -> None:
    model = TemporalControlNet(**TINY)
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    # the condition embedding is Conv3d: 3x3x3, and (1, 3, 3) where it downsamples
    assert shapes['controlnet_cond_embedding.conv_in.weight'] == (8, 3, 3, 3, 3)
    assert shapes['controlnet_cond_embedding.blocks.0.weight'] == (8, 8, 3, 3, 3)
    assert shapes['controlnet_cond_embedding.blocks.1.weight'] == (16, 8, 1, 3, 3)
    assert shapes['controlnet_cond_embedding.conv_out.weight'] == (32, 16, 3, 3, 3)
    # 1 + 2 levels x 2 layers + 1 downsampler = 6 residuals, each a 1x1x1 Conv3d
    widths = [32, 32, 32, 32, 64, 64]
    for i, width in enumerate(widths):
        assert shapes[f'controlnet_down_blocks.{i}.weight'] == (width, width, 1, 1, 1)
        assert shapes[f'mixing_attns.{i}'] == ()
    assert 'controlnet_down_blocks.6.weight' not in shapes
    assert shapes['controlnet_mid_block.weight'] == (64, 64, 1, 1, 1)
    # temporal attention at residual 0 (8 heads x 64) and at the downsampler's (index 3)
    temporal = {key.split('.')[1] for key in shapes if key.startswith('temporal_blocks.')}
    assert temporal == {'0', '3'}
    assert shapes['temporal_blocks.0.proj_in.weight'] == (512, 32)
    assert shapes['temporal_blocks.0.transformer_blocks.0.ff.net.0.proj.weight'] == (4096, 512)
    # level 0: 32 channels // 4 dims = 8 heads of 4 -> inner 32; attn2 is self-attention
    assert shapes['temporal_blocks.3.proj_in.weight'] == (32, 32)
    assert shapes['temporal_blocks.3.transformer_blocks.0.attn2.to_k.weight'] == (32, 32)
    assert shapes['metadata_embedding.6.linear_2.weight'] == (128, 128)
    trainable = [i for i, p in enumerate(model.mixing_attns) if p.requires_grad]
    assert trainable == [0, 3]
    # theirs hard-codes the first block's 8 x 64; tiny presets narrow it (a config field)
    narrow = TemporalControlNet(**TINY, first_temporal_heads=4, first_temporal_head_dim=8)
    assert narrow.state_dict()['temporal_blocks.0.proj_in.weight'].shape == (32, 32)
    assert narrow.config.first_temporal_heads == 4


def test_one_frame_with_mixing_off_is_diffusionsats_2d_controlnet() -> None:
    """Conv3d over one frame sees only its centre slice: the 2D model with those weights."""
    model = TemporalControlNet(**TINY)
    _randomised(model)
    with torch.no_grad():
        for weight in model.mixing_attns:
            weight.zero_()
    flat = DiffusionSatControlNet(**TINY)
    weights = {}
    for key, value in model.state_dict().items():
        if key.startswith(('temporal_blocks.', 'mixing_attns.')):
            continue
        weights[key] = value[:, :, value.shape[2] // 2] if value.ndim == 5 else value
    flat.load_state_dict(weights)
    inputs = _inputs(frames=1)
    temporal = model(**inputs)
    two_d = dict(inputs)
    two_d['controlnet_cond'] = inputs['controlnet_cond'][:, :, 0]
    two_d['cond_metadata'] = inputs['cond_metadata'][..., 0]
    reference = flat(**two_d)
    for ours, theirs in zip(temporal.down_block_res_samples, reference.down_block_res_samples):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        temporal.mid_block_res_sample, reference.mid_block_res_sample, rtol=1e-4, atol=1e-5
    )


def test_frames_are_summed_and_mixed_by_temporal_attention() -> None:
    model = TemporalControlNet(**TINY)
    _randomised(model)
    with torch.no_grad():  # no temporal kernel, no mixing: each frame on its own
        embedding = model.controlnet_cond_embedding
        for conv in [embedding.conv_in, *embedding.blocks, embedding.conv_out]:
            if conv.kernel_size[0] == 3:
                conv.weight[:, :, [0, 2]] = 0
        for weight in model.mixing_attns:
            weight.zero_()
    one = _inputs(frames=1)
    two = dict(one)
    two['controlnet_cond'] = one['controlnet_cond'].repeat(1, 1, 2, 1, 1)
    two['cond_metadata'] = one['cond_metadata'].repeat(1, 1, 2)
    single, double = model(**one), model(**two)
    torch.testing.assert_close(double.mid_block_res_sample, 2 * single.mid_block_res_sample)
    for a, b in zip(double.down_block_res_samples, single.down_block_res_samples):
        torch.testing.assert_close(a, 2 * b, rtol=1e-4, atol=1e-5)
    # mixing on: attention across the two frames changes the gated residuals only
    with torch.no_grad():
        model.mixing_attns[0].fill_(1.0)
    mixed = model(**two)
    assert not torch.allclose(mixed.down_block_res_samples[0], double.down_block_res_samples[0])
    torch.testing.assert_close(mixed.down_block_res_samples[1], double.down_block_res_samples[1])
    # a weight above 1 is clamped (their MixingParam) but still gets a gradient
    with torch.no_grad():
        model.mixing_attns[0].fill_(3.0)
    clamped = model(**two)
    torch.testing.assert_close(clamped.down_block_res_samples[0], mixed.down_block_res_samples[0])
    clamped.down_block_res_samples[0].sum().backward()
    assert model.mixing_attns[0].grad is not None and model.mixing_attns[0].grad.abs() > 0


def test_saves_and_loads_with_their_config_fields(tmp_path: Path) -> None:
    model = TemporalControlNet(**TINY)
    _randomised(model)
    model.save_pretrained(tmp_path / 'controlnet')
    config = (tmp_path / 'controlnet' / 'config.json').read_text()
    for field in ('use_temporal_transformer', 'conditioning_in_channels', 'num_metadata'):
        assert f'"{field}"' in config
    loaded = TemporalControlNet.from_pretrained(tmp_path / 'controlnet')
    inputs = _inputs(frames=3)
    torch.testing.assert_close(
        loaded(**inputs).mid_block_res_sample, model(**inputs).mid_block_res_sample
    )


def test_refuses_frames_that_do_not_fit() -> None:
    model = TemporalControlNet(**TINY)
    inputs = _inputs(frames=2)
    with pytest.raises(ValueError, match=r'takes \[batch, 3, frames, h, w\]'):
        model(**{**inputs, 'controlnet_cond': inputs['controlnet_cond'][:, :, 0]})
    with pytest.raises(ValueError, match='3 frames of metadata for 2 conditioning frames'):
        model(**{**inputs, 'cond_metadata': torch.zeros(2, 7, 3)})
    with pytest.raises(ValueError, match='conditioning_scale must be 1'):
        TemporalControlNet(**TINY, conditioning_scale=2)


def _their_config() -> dict[str, Any]:
    """``config.json`` as their ``ControlNetModel3D`` (diffusers 0.17) writes it, tiny sizes."""
    return {
        '_class_name': 'ControlNetModel3D',
        '_diffusers_version': '0.17.0.dev0',
        'act_fn': 'silu',
        'attention_head_dim': [4, 8],
        'block_out_channels': [32, 64],
        'class_embed_type': None,
        'conditioning_embedding_out_channels': [8, 16],
        'conditioning_in_channels': 3,
        'controlnet_conditioning_channel_order': 'rgb',
        'cross_attention_dim': 16,
        'down_block_types': ['CrossAttnDownBlock2D', 'DownBlock2D'],
        'downsample_padding': 1,
        'flip_sin_to_cos': True,
        'freq_shift': 0,
        'global_pool_conditions': False,
        'in_channels': 4,
        'layers_per_block': 2,
        'mid_block_scale_factor': 1,
        'norm_eps': 1e-05,
        'norm_num_groups': 8,
        'num_class_embeds': None,
        'num_metadata': 7,
        'only_cross_attention': False,
        'projection_class_embeddings_input_dim': None,
        'resnet_time_scale_shift': 'default',
        'upcast_attention': False,
        'use_linear_projection': True,
        'use_metadata': True,
        'use_temporal_transformer': True,
    }


def test_their_released_folder_loads_key_for_key(tmp_path: Path) -> None:
    model = TemporalControlNet(**TINY)
    _randomised(model)
    folder = tmp_path / 'controlnet3d-mixattn_sd21_md7norm_texas' / 'controlnet'
    folder.mkdir(parents=True)
    (folder / 'config.json').write_text(json.dumps(_their_config()))
    save_file(model.state_dict(), folder / 'diffusion_pytorch_model.safetensors')
    assert is_temporal_controlnet(folder)
    loaded = load_temporal_controlnet(folder.parent, subfolder='controlnet')
    inputs = _inputs(frames=3)
    expected = model(**inputs).down_block_res_samples[3]
    torch.testing.assert_close(loaded(**inputs).down_block_res_samples[3], expected)
    # the 2D loader (super-resolution ControlNets) names what the folder is instead
    with pytest.raises(ValueError, match=r'temporal ControlNet .*load_temporal_controlnet'):
        load_diffusionsat_controlnet(folder)
    # a weight missing is named, not skipped
    weights = model.state_dict()
    del weights['mixing_attns.3']
    save_file(weights, folder / 'diffusion_pytorch_model.safetensors')
    with pytest.raises(ValueError, match=r'mixing_attns\.3'):
        load_temporal_controlnet(folder)
