# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from diffusers import ControlNetModel
from test_diffusionsat import SIZE, their_metadata_embedding, their_metadata_weights

from torchgeo_earthsynth.models import (
    SENTINEL2_LOW_RES_BANDS,
    DiffusionSatControlNet,
    find_diffusionsat_controlnet,
    is_diffusionsat_unet,
    load_diffusionsat_controlnet,
    normalize_metadata,
    sentinel2_low_res,
    tiny_controlnet,
    tiny_diffusionsat_unet,
    tiny_parts,
)
from torchgeo_earthsynth.models.diffusionsat_controlnet import _condition_strides
from torchgeo_earthsynth.synthesis import Synthesizer, build_pipeline, build_text_pipeline

NAN = math.nan

#: The config fields of their ControlNetModel.__init__ (diffusionsat/controlnet.py).
THEIR_CONTROLNET_FIELDS = (
    'in_channels flip_sin_to_cos freq_shift down_block_types only_cross_attention '
    'block_out_channels layers_per_block downsample_padding mid_block_scale_factor act_fn '
    'norm_num_groups norm_eps cross_attention_dim attention_head_dim use_linear_projection '
    'class_embed_type num_class_embeds upcast_attention resnet_time_scale_shift '
    'projection_class_embeddings_input_dim controlnet_conditioning_channel_order '
    'conditioning_embedding_out_channels global_pool_conditions conditioning_in_channels '
    'conditioning_scale use_metadata num_metadata'
).split()
#: Their ControlNet's weight-holding modules (controlnet.py attribute names).
THEIR_MODULES = (
    'conv_in.',
    'time_embedding.',
    'metadata_embedding.',
    'controlnet_cond_embedding.conv_in.',
    'controlnet_cond_embedding.blocks.',
    'controlnet_cond_embedding.conv_out.',
    'down_blocks.',
    'controlnet_down_blocks.',
    'mid_block.',
    'controlnet_mid_block.',
)
BANDS = 10
EMBEDDING = (8, 8, 8, 8)  # SD's four-level condition embedding, tiny


def their_controlnet(scale: int, seed: int = 0) -> tuple[dict, dict]:
    """Config and weights of a tiny SR ControlNet as their train_controlnet.py saves it."""
    unet = tiny_diffusionsat_unet(seed, SIZE // 2)
    torch.manual_seed(seed + 1)
    plain = ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=EMBEDDING, conditioning_channels=BANDS
    )
    config = {k: v for k, v in plain.config.items() if k in THEIR_CONTROLNET_FIELDS}
    config.update(conditioning_in_channels=BANDS, conditioning_scale=scale)
    config.update(use_metadata=True, num_metadata=7)
    config.update(_class_name='ControlNetModel', _diffusers_version='0.17.0.dev0')
    weights = {k: v.clone() for k, v in plain.state_dict().items()}
    # their zero-initialised output convolutions, as if trained
    generator = torch.Generator().manual_seed(seed + 2)
    for key, value in weights.items():
        if 'controlnet_' in key or 'conv_out' in key:
            weights[key] = torch.randn(value.shape, generator=generator) * 0.05
    weights.update(their_metadata_weights(unet, seed + 3))
    return config, weights


def save_their_controlnet(folder: Path, scale: int = 2) -> dict:
    config, weights = their_controlnet(scale)
    folder.mkdir(parents=True)
    (folder / 'config.json').write_text(json.dumps(config))
    torch.save(weights, folder / 'diffusion_pytorch_model.bin')
    return weights


# ---------------------------------------------------------------------- the model


def test_strides_follow_their_rule() -> None:
    # controlnet.py: stride 2 while the scale (doubling per block, capped at 8) is below 8
    assert _condition_strides(3, 1) == [2, 2, 2]
    assert _condition_strides(3, 2) == [2, 2, 1]
    assert _condition_strides(3, 4) == [2, 1, 1]
    assert _condition_strides(3, 8) == [1, 1, 1]


def test_loads_their_folder_key_for_key(tmp_path: Path) -> None:
    weights = save_their_controlnet(tmp_path / 'controlnet')
    assert all(k.startswith(THEIR_MODULES) for k in weights)
    assert not is_diffusionsat_unet(tmp_path / 'controlnet')  # has use_metadata too
    model = load_diffusionsat_controlnet(tmp_path / 'controlnet')
    assert set(model.state_dict()) == set(weights)
    for key in ('metadata_embedding.3.linear_1.weight', 'controlnet_cond_embedding.conv_in.weight'):
        assert torch.equal(model.state_dict()[key], weights[key])
    assert model.config.conditioning_in_channels == BANDS
    assert model.condition_downsample == 4  # 512 px output from a 256 px condition


def test_missing_or_unexpected_weights_are_errors(tmp_path: Path) -> None:
    weights = save_their_controlnet(tmp_path / 'controlnet')
    del weights['metadata_embedding.0.linear_1.bias']
    torch.save(weights, tmp_path / 'controlnet' / 'diffusion_pytorch_model.bin')
    with pytest.raises(ValueError, match=r'controlnet: weights do not match.*linear_1\.bias'):
        load_diffusionsat_controlnet(tmp_path / 'controlnet')


def test_finds_the_newest_checkpoint(tmp_path: Path) -> None:
    save_their_controlnet(tmp_path / 'checkpoint-500' / 'controlnet')
    save_their_controlnet(tmp_path / 'checkpoint-5000' / 'controlnet')
    assert find_diffusionsat_controlnet(tmp_path) == tmp_path / 'checkpoint-5000' / 'controlnet'
    assert find_diffusionsat_controlnet(tmp_path / 'checkpoint-500' / 'controlnet')
    assert find_diffusionsat_controlnet(tmp_path / 'checkpoint-500') is not None


def test_forward_equals_a_direct_computation(tmp_path: Path) -> None:
    """Ours == diffusers' ControlNet with their strides and the metadata sum added to emb."""
    weights = save_their_controlnet(tmp_path / 'controlnet')
    ours = load_diffusionsat_controlnet(tmp_path / 'controlnet')
    config, _ = their_controlnet(2)
    plain_fields = {k: v for k, v in config.items() if not k.startswith('_')}
    for name in ('conditioning_in_channels', 'conditioning_scale', 'use_metadata', 'num_metadata'):
        plain_fields.pop(name)
    # an identity class embedding lets the reference add a given vector to emb
    plain_fields.update(conditioning_channels=BANDS, class_embed_type='identity')
    reference = ControlNetModel(**plain_fields)
    reference.load_state_dict(
        {k: v for k, v in weights.items() if not k.startswith('metadata_')}, strict=True
    )
    reference.controlnet_cond_embedding.blocks[5].stride = (1, 1)  # scale 2: strides 2, 2, 1
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, 8, 8, generator=generator)
    text = torch.randn(2, 5, 32, generator=generator)
    low_res = torch.rand(2, BANDS, 32, 32, generator=generator)
    metadata = normalize_metadata(torch.tensor([[2.3, 48.8, 0.6, 0.1, 2020, 6, 1]] * 2))
    cond_metadata = metadata.clone()
    cond_metadata[:, 2] = 10 * 1000  # their fMoW low-res metadata: GSD 10 m
    dim = config['block_out_channels'][0]
    added = their_metadata_embedding(weights, metadata, dim) + their_metadata_embedding(
        weights, cond_metadata, dim
    )
    with torch.no_grad():
        down, mid = ours(
            sample,
            50,
            text,
            low_res,
            metadata=metadata,
            cond_metadata=cond_metadata[..., None],  # [B, 7, T=1] as their fMoW loader
            return_dict=False,
        )
        ref_down, ref_mid = reference(
            sample, 50, text, low_res, class_labels=added, return_dict=False
        )
        no_metadata = ours(sample, 50, text, low_res, return_dict=False)[1]
    for got, want in zip([*down, mid], [*ref_down, ref_mid], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(no_metadata, mid)


def test_wrong_condition_gets_a_clear_error(tmp_path: Path) -> None:
    save_their_controlnet(tmp_path / 'controlnet')
    model = load_diffusionsat_controlnet(tmp_path / 'controlnet')
    sample, text = torch.randn(1, 4, 8, 8), torch.randn(1, 5, 32)
    with pytest.raises(ValueError, match=r'takes \[batch, 10, h, w\].*got \[1, 3, 32, 32\]'):
        model(sample, 1, text, torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r'conditioning_scale=2: expected \[32, 32\] px'):
        model(sample, 1, text, torch.rand(1, BANDS, 64, 64))
    with pytest.raises(ValueError, match=r'metadata: expected shape \[batch, 7\]'):
        model(sample, 1, text, torch.rand(1, BANDS, 32, 32), metadata=torch.zeros(1, 6))


def test_sentinel2_low_res_is_their_loader() -> None:
    mean = torch.tensor([1370.19151926, 1184.3824625, 1120.77120066, 1136.26026392])
    std = torch.tensor([633.15169573, 650.2842772, 712.12507725, 965.23119807])
    bands = torch.full((1, 13, 2, 2), 1000.0)
    bands[0, :4, 0, 0] = mean[:4] + 2 * std[:4]  # top of the range: 255
    bands[0, :4, 0, 1] = mean[:4] - 2 * std[:4] - 5  # below it: clipped to 0
    out = sentinel2_low_res(bands)
    assert out.shape == (1, 10, 2, 2) and len(SENTINEL2_LOW_RES_BANDS) == 10
    # B4, B3, B2 first (their BGR -> RGB swap), B1/B9/B10 dropped
    assert torch.allclose(out[0, :3, 0, 0], torch.ones(3))
    assert torch.equal(out[0, :3, 0, 1], torch.zeros(3))
    # 8-bit: floor((x - low) / (high - low) * 255) / 255, B4's statistics in channel 0
    low, high = mean[3] - 2 * std[3], mean[3] + 2 * std[3]
    assert out[0, 0, 1, 0] == torch.floor((1000 - low) / (high - low) * 255) / 255
    with pytest.raises(ValueError, match='13, h, w'):
        sentinel2_low_res(torch.zeros(1, 10, 2, 2))


# ---------------------------------------------------------------------- synthesis


@pytest.fixture(scope='module')
def super_resolution(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Their releases: the text + metadata pipeline and an SR ControlNet for its UNet."""
    base = tmp_path_factory.mktemp('finetune_sd21_sn-satlas-fmow_snr5_md7norm_bs64')
    parts = tiny_parts(0, SIZE, prediction_type='v_prediction')
    parts.unet = tiny_diffusionsat_unet(0, SIZE // 2)
    build_text_pipeline(parts).save_pretrained(base)
    sr = tmp_path_factory.mktemp('controlnet_sd21_md7norm_fmow_condres256')
    config, weights = their_controlnet(8)  # tiny VAE 2x: a half-size condition, no stride
    config['conditioning_embedding_out_channels'] = [16, 32]
    plain = ControlNetModel.from_unet(
        parts.unet, conditioning_embedding_out_channels=(16, 32), conditioning_channels=BANDS
    )
    weights = {**plain.state_dict(), **their_metadata_weights(parts.unet, 4)}
    for key, value in weights.items():
        if key.startswith(
            ('controlnet_down', 'controlnet_mid', 'controlnet_cond_embedding.conv_out')
        ):
            weights[key] = torch.randn(value.shape, generator=torch.Generator().manual_seed(1)) / 4
    (sr / 'checkpoint-50000' / 'controlnet').mkdir(parents=True)
    (sr / 'checkpoint-50000' / 'controlnet' / 'config.json').write_text(json.dumps(config))
    torch.save(weights, sr / 'checkpoint-50000' / 'controlnet' / 'diffusion_pytorch_model.bin')
    return base, sr


PLACE = torch.tensor([[2.35, 48.85, 0.5, 0.0, 2021, 6, 15], [-70, -30, 1.0, NAN, 2017, 1, 2]])


def test_from_pretrained_super_resolves(super_resolution: tuple[Path, Path]) -> None:
    base, sr = super_resolution
    synth = Synthesizer.from_pretrained(sr, base=base, num_inference_steps=2, guidance_scale=3.0)
    assert synth.takes('low_res') and synth.takes('metadata') and not synth.takes('mask')
    prompts = ['a satellite image of farmland'] * 2
    low_res = torch.rand(2, BANDS, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(0))
    images = synth.generate(None, prompts, metadata=PLACE, low_res=low_res)
    assert images.shape == (2, 3, SIZE, SIZE)  # 2x the low-res image
    other = synth.generate(None, prompts, metadata=PLACE, low_res=low_res.flip(-1))
    assert not torch.allclose(images, other)  # the low-res image steers
    moved = synth.generate(None, prompts, metadata=PLACE.flip(0), low_res=low_res)
    assert not torch.allclose(images, moved)  # and the metadata too
    # the low-res image's metadata defaults to the target's with a 10 m GSD (their fMoW)
    ten_metres = PLACE.clone()
    ten_metres[:, 2] = 10
    same = synth.generate(
        None, prompts, metadata=PLACE, low_res=low_res, low_res_metadata=ten_metres
    )
    torch.testing.assert_close(same, images)


def test_super_resolution_refuses_bad_requests(super_resolution: tuple[Path, Path]) -> None:
    base, sr = super_resolution
    synth = Synthesizer.from_pretrained(sr, base=base, num_inference_steps=1)
    prompts = ['x']
    with pytest.raises(ValueError, match=r'low_res: expected \[1, 10, h, w\].*takes 10 bands'):
        synth.generate(None, prompts, metadata=PLACE[:1], low_res=torch.rand(1, 13, 16, 16))
    with pytest.raises(ValueError, match='generate needs low_res'):
        synth.generate(None, prompts, metadata=PLACE[:1])
    with pytest.raises(ValueError, match=r'\[16, 16\] px does not fit a 64x64 output'):
        synth.generate(
            None, prompts, size=(64, 64), metadata=PLACE[:1], low_res=torch.rand(1, BANDS, 16, 16)
        )
    with pytest.raises(ValueError, match='needs base= the DiffusionSat checkpoint'):
        Synthesizer.from_pretrained(sr)
    text_only = Synthesizer.from_pretrained(base, num_inference_steps=1)
    with pytest.raises(ValueError, match='takes no low_res'):
        text_only.generate(None, prompts, metadata=PLACE[:1], low_res=torch.rand(1, BANDS, 8, 8))


def test_tiny_super_resolution_family() -> None:
    synth = Synthesizer.tiny(family='diffusionsat_sr', num_inference_steps=1)
    images = synth.generate(None, ['x'], metadata=PLACE[:1], low_res=torch.rand(1, BANDS, 16, 16))
    assert images.shape == (1, 3, 32, 32)


# ---------------------------------------------------------------------- EarthSynth + metadata


def test_mask_controlnet_takes_metadata_unchanged_until_trained() -> None:
    parts = tiny_parts(0, SIZE)
    released = tiny_controlnet(parts.unet)
    torch.manual_seed(3)
    for param in released.parameters():  # trained zero convolutions
        param.data.add_(torch.randn_like(param) * 0.01)
    with_metadata = DiffusionSatControlNet.from_controlnet(released)
    assert with_metadata.config.conditioning_in_channels == 3
    sample, text = torch.randn(2, 4, SIZE // 2, SIZE // 2), torch.randn(2, 5, 32)
    cond = torch.rand(2, 3, SIZE, SIZE)
    metadata = normalize_metadata(PLACE)
    with torch.no_grad():
        want = released(sample, 10, text, cond, return_dict=False)[1]
        for given in (None, metadata):
            got = with_metadata(sample, 10, text, cond, metadata=given, return_dict=False)[1]
            torch.testing.assert_close(got, want)

    # Synthesizer: the same images without metadata; metadata optional, then it steers
    plain = Synthesizer(build_pipeline(parts, released), num_inference_steps=2, guidance_scale=3)
    synth = Synthesizer(
        build_pipeline(parts, with_metadata), num_inference_steps=2, guidance_scale=3
    )
    assert synth.takes('metadata') and synth.takes('mask') and 'metadata' not in synth.needs
    masks = torch.randint(0, 12, (2, SIZE, SIZE))
    prompts = ['a satellite image of road'] * 2
    reference = plain.generate(masks, prompts)
    torch.testing.assert_close(synth.generate(masks, prompts), reference)
    torch.testing.assert_close(synth.generate(masks, prompts, metadata=PLACE), reference)
    with pytest.raises(ValueError, match='not conditioned on metadata'):
        plain.generate(masks, prompts, metadata=PLACE)
    assert with_metadata.metadata_embedding is not None
    for embedding in with_metadata.metadata_embedding:  # as if trained
        torch.nn.init.normal_(embedding.linear_2.weight, std=0.5)
    trained = synth.generate(masks, prompts, metadata=PLACE)
    assert not torch.allclose(trained, reference)
