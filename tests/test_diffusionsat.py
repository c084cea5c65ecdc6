# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from torchgeo.datasets import RasterDataset, stack_samples
from torchgeo.samplers import GridGeoSampler

from torchgeo_earthsynth.cli import main as cli_main
from torchgeo_earthsynth.datamodules import EarthSynthMiniDataModule
from torchgeo_earthsynth.datasets import EarthSynthMini, make_mini_corpus
from torchgeo_earthsynth.datasets.mini import greenness
from torchgeo_earthsynth.geo import metadata_from_geo_sample
from torchgeo_earthsynth.lightning_modules import DiffusionSatTask
from torchgeo_earthsynth.models import (
    DiffusionSatUNet,
    find_diffusionsat_unet,
    load_diffusionsat_unet,
    normalize_metadata,
    tiny_parts,
    tiny_unet,
    unconditional_metadata,
)
from torchgeo_earthsynth.synthesis import Synthesizer, build_text_pipeline
from torchgeo_earthsynth.vocabulary import CLASS_IDS

SIZE = 32
NAN = math.nan

#: The config fields of DiffusionSat's SatUNet.__init__ (diffusionsat/sat_unet.py).
SATUNET_FIELDS = (
    'sample_size in_channels out_channels center_input_sample flip_sin_to_cos freq_shift '
    'down_block_types mid_block_type up_block_types only_cross_attention block_out_channels '
    'layers_per_block downsample_padding mid_block_scale_factor act_fn norm_num_groups norm_eps '
    'cross_attention_dim attention_head_dim dual_cross_attention use_linear_projection '
    'class_embed_type num_class_embeds upcast_attention resnet_time_scale_shift '
    'time_embedding_type timestep_post_act time_cond_proj_dim conv_in_kernel conv_out_kernel '
    'use_metadata num_metadata'
).split()


def their_metadata_weights(unet: UNet2DConditionModel, seed: int = 1) -> dict[str, torch.Tensor]:
    """SatUNet's metadata weights by their names: 7 x TimestepEmbedding(C, 4C)."""
    generator = torch.Generator().manual_seed(seed)
    channels = unet.config.block_out_channels[0]
    shapes = {
        'linear_1.weight': (4 * channels, channels),
        'linear_1.bias': (4 * channels,),
        'linear_2.weight': (4 * channels, 4 * channels),
        'linear_2.bias': (4 * channels,),
    }
    return {
        f'metadata_embedding.{i}.{name}': torch.randn(shape, generator=generator) * 0.1
        for i in range(7)
        for name, shape in shapes.items()
    }


def save_their_unet(folder: Path, unet: UNet2DConditionModel, extra: dict | None = None) -> dict:
    """A UNet folder as DiffusionSat's training writes it: SatUNet config, .bin weights."""
    folder.mkdir(parents=True)
    config = {k: v for k, v in unet.config.items() if k in SATUNET_FIELDS}
    config.update(_class_name='SatUNet', _diffusers_version='0.17.0.dev0')
    config.update(use_metadata=True, num_metadata=7)
    (folder / 'config.json').write_text(json.dumps(config))
    weights = {**unet.state_dict(), **their_metadata_weights(unet), **(extra or {})}
    torch.save(weights, folder / 'diffusion_pytorch_model.bin')
    return weights


@pytest.fixture(scope='module')
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Their release layout: a pipeline folder with the metadata UNet in checkpoint-N/unet."""
    root = tmp_path_factory.mktemp('finetune_sd21_sn-satlas-fmow_snr5_md7norm_bs64')
    parts = tiny_parts(0, SIZE, prediction_type='v_prediction')
    build_text_pipeline(parts).save_pretrained(root)
    save_their_unet(root / 'checkpoint-100' / 'unet', parts.unet)
    save_their_unet(root / 'checkpoint-50' / 'unet', tiny_unet(5, SIZE // 2))
    return root


def sinusoid(values: torch.Tensor, dim: int) -> torch.Tensor:
    """diffusers' Timesteps(dim, flip_sin_to_cos=True, freq_shift=0), written out."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    angles = values.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def their_metadata_embedding(weights: dict, metadata: torch.Tensor, dim: int) -> torch.Tensor:
    """SatUNet.forward's metadata term: sum_i TimestepEmbedding_i(time_proj(md_i))."""
    total = torch.zeros(metadata.shape[0], 4 * dim)
    for i in range(7):
        w = {
            k.split(f'metadata_embedding.{i}.')[1]: v
            for k, v in weights.items()
            if k.startswith(f'metadata_embedding.{i}.')
        }
        hidden = F.silu(
            F.linear(sinusoid(metadata[:, i], dim), w['linear_1.weight'], w['linear_1.bias'])
        )
        total = total + F.linear(hidden, w['linear_2.weight'], w['linear_2.bias'])
    return total


# ---------------------------------------------------------------------- loading


def test_finds_the_newest_checkpoint_unet(release: Path) -> None:
    assert find_diffusionsat_unet(release) == release / 'checkpoint-100' / 'unet'
    assert find_diffusionsat_unet(release / 'checkpoint-50') == release / 'checkpoint-50' / 'unet'
    assert find_diffusionsat_unet(release / 'vae') is None


def test_loads_their_folder_key_for_key(tmp_path: Path) -> None:
    base = tiny_unet(0, SIZE // 2)
    saved = save_their_unet(tmp_path / 'unet', base)
    unet = load_diffusionsat_unet(tmp_path / 'unet')
    assert unet.config.use_metadata and unet.config.num_metadata == 7
    state = unet.state_dict()
    assert set(state) == set(saved)
    for key, value in saved.items():
        assert torch.equal(state[key], value), key
    assert len(unet.metadata_embedding) == 7


def test_missing_or_unexpected_weights_are_errors(tmp_path: Path) -> None:
    base = tiny_unet(0, SIZE // 2)
    save_their_unet(
        tmp_path / 'extra', base, {'metadata_embedding.7.linear_1.bias': torch.zeros(128)}
    )
    with pytest.raises(ValueError, match=r'extra.*unexpected_keys.*metadata_embedding\.7'):
        load_diffusionsat_unet(tmp_path / 'extra')
    folder = tmp_path / 'missing'
    weights = save_their_unet(folder, base)
    weights.pop('metadata_embedding.3.linear_2.weight')
    torch.save(weights, folder / 'diffusion_pytorch_model.bin')
    with pytest.raises(ValueError, match=r'missing.*metadata_embedding\.3\.linear_2\.weight'):
        load_diffusionsat_unet(folder)
    # SD's own UNet (no metadata weights) is not a DiffusionSat UNet.
    base.save_pretrained(tmp_path / 'sd')
    with pytest.raises(ValueError, match=r'missing_keys.*metadata_embedding\.0'):
        load_diffusionsat_unet(tmp_path / 'sd')


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    unet = DiffusionSatUNet.from_unet(tiny_unet(0, SIZE // 2))
    unet.save_pretrained(tmp_path / 'ours')
    again = load_diffusionsat_unet(tmp_path / 'ours')
    assert again.config.num_metadata == 7
    for key, value in unet.state_dict().items():
        assert torch.equal(again.state_dict()[key], value)


def test_signature_exposes_every_unet_field() -> None:
    ours = set(inspect.signature(DiffusionSatUNet.__init__).parameters)
    theirs = set(inspect.signature(UNet2DConditionModel.__init__).parameters)
    assert ours == theirs | {'use_metadata', 'num_metadata'}


# ---------------------------------------------------------------------- forward


def test_forward_equals_their_computation(tmp_path: Path) -> None:
    base = tiny_unet(0, SIZE // 2)
    weights = save_their_unet(tmp_path / 'unet', base)
    unet = load_diffusionsat_unet(tmp_path / 'unet').eval()
    # The reference: SD's UNet with the metadata term added to the timestep embedding
    # (diffusers' identity class embedding adds class_labels to it, as SatUNet does).
    reference = UNet2DConditionModel(**{**base.config, 'class_embed_type': 'identity'}).eval()
    reference.load_state_dict(base.state_dict())
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(3, 4, SIZE // 2, SIZE // 2, generator=generator)
    text = torch.randn(3, 77, 32, generator=generator)
    metadata = normalize_metadata(
        torch.tensor([[2.35, 48.85, 0.5, 0.1, 2021, 6, 15], [-70, -30, 10, 0, 2017, 1, 2]] * 2)[:3]
    )
    timesteps = torch.tensor([10, 500, 999])
    with torch.no_grad():
        term = their_metadata_embedding(weights, metadata, base.config.block_out_channels[0])
        expected = reference(sample, timesteps, text, class_labels=term).sample
        actual = unet(sample, timesteps, text, metadata=metadata).sample
        unconditional = unet(sample, timesteps, text, metadata=unconditional_metadata(3)).sample
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    assert (actual - unconditional).abs().max() > 1e-3  # metadata matters


def test_fresh_metadata_embeddings_leave_the_base_output_unchanged() -> None:
    base = tiny_unet(0, SIZE // 2).eval()
    unet = DiffusionSatUNet.from_unet(base).eval()
    sample, text = torch.randn(2, 4, 16, 16), torch.randn(2, 77, 32)
    metadata = normalize_metadata(torch.tensor([[2.35, 48.85, 0.5, 0.1, 2021, 6, 15]] * 2))
    with torch.no_grad():
        torch.testing.assert_close(
            unet(sample, 3, text, metadata=metadata).sample, base(sample, 3, text).sample
        )


def test_metadata_rides_in_cross_attention_kwargs() -> None:
    unet = DiffusionSatUNet.from_unet(tiny_unet(0, SIZE // 2)).eval()
    assert unet.metadata_embedding is not None
    for embedding in unet.metadata_embedding:  # trained embeddings: the metadata matters
        torch.nn.init.normal_(embedding.linear_2.weight)
    sample, text = torch.randn(2, 4, 16, 16), torch.randn(2, 77, 32)
    metadata = torch.rand(2, 7) * 1000
    with torch.no_grad():
        direct = unet(sample, 3, text, metadata=metadata).sample
        carried = unet(sample, 3, text, cross_attention_kwargs={'metadata': metadata}).sample
    torch.testing.assert_close(direct, carried)


def test_forward_refuses_bad_metadata() -> None:
    unet = DiffusionSatUNet.from_unet(tiny_unet(0, SIZE // 2))
    sample, text = torch.randn(2, 4, 16, 16), torch.randn(2, 77, 32)
    with pytest.raises(ValueError, match='needs metadata'):
        unet(sample, 3, text)
    with pytest.raises(ValueError, match=r'expected shape \[batch, 7\].*got \[2, 6\]'):
        unet(sample, 3, text, metadata=torch.zeros(2, 6))
    with pytest.raises(ValueError, match=r'expected shape \[2, 7\] for 2 samples, got \[3, 7\]'):
        unet(sample, 3, text, metadata=torch.zeros(3, 7))
    plain = DiffusionSatUNet(**{**tiny_unet().config, 'use_metadata': False})
    with pytest.raises(ValueError, match='use_metadata=False'):
        plain(sample, 3, text, metadata=torch.zeros(2, 7))


# ---------------------------------------------------------------------- normalisation


def test_normalisation_is_theirs() -> None:
    physical = torch.tensor(
        [
            [0.0, 0.0, 0.5, 0.25, 2040, 6, 31],
            [-180, -90, 1.0, 1.0, 1980, 12, 1],
            [76.5712666476, 28.6965307997, 0.929417550564, 0.0765712666476, 2015, 2, 27],
        ]
    )
    expected = torch.tensor(
        [
            [500.0, 500.0, 500.0, 250.0, 500.0, 500.0, 1000.0],
            [0.0, 0.0, 1000.0, 1000.0, 0.0, 1000.0, 1000 / 31],
            # loaders: lon + 180, lat + 90, year - 1980; then /360, /180, /1, x1, /120, /12, /31
            [
                (76.5712666476 + 180) / 360 * 1000,
                (28.6965307997 + 90) / 180 * 1000,
                929.417550564,
                76.5712666476,
                35 / 120 * 1000,
                2 / 12 * 1000,
                27 / 31 * 1000,
            ],
        ]
    )
    torch.testing.assert_close(normalize_metadata(physical), expected)


def test_unknown_fields_are_dropped_fields() -> None:
    physical = torch.tensor([[2.35, NAN, 0.5, NAN, 2021, NAN, NAN], [NAN] * 7])
    normalised = normalize_metadata(physical)
    assert normalised[0, 1] == 0 and normalised[0, 3] == 0 and normalised[0, 5:].eq(0).all()
    assert normalised[0, 0] > 0 and normalised[0, 4] > 0
    assert torch.equal(normalised[1], unconditional_metadata(1)[0])
    assert not normalised.isnan().any()


def test_normalisation_refuses_wrong_shapes() -> None:
    with pytest.raises(ValueError, match=r'expected shape \[2, 7\].*lon, lat, gsd.*got \[2, 6\]'):
        normalize_metadata(torch.zeros(2, 6))
    with pytest.raises(ValueError, match=r'got \[7\]'):
        normalize_metadata(torch.zeros(7))


# ---------------------------------------------------------------------- synthesizer


@pytest.fixture(scope='module')
def synth(release: Path) -> Synthesizer:
    return Synthesizer.from_pretrained(release, num_inference_steps=2, guidance_scale=3.0)


PLACES = torch.tensor(
    [[2.35, 48.85, 0.5, 0.0, 2021, 6, 15], [-70, -30, 10, NAN, 2017, 1, 2], [NAN] * 7]
)


def test_from_pretrained_detects_diffusionsat(synth: Synthesizer, release: Path) -> None:
    assert isinstance(synth.pipeline.unet, DiffusionSatUNet)
    assert synth.takes('metadata') and not synth.takes('mask')
    assert synth.pipeline.scheduler.config.prediction_type == 'v_prediction'
    loaded = synth.pipeline.unet.state_dict()['metadata_embedding.6.linear_2.bias']
    saved = torch.load(
        release / 'checkpoint-100/unet/diffusion_pytorch_model.bin', weights_only=True
    )
    assert torch.equal(loaded, saved['metadata_embedding.6.linear_2.bias'])


def test_generate_for_places_and_dates(synth: Synthesizer) -> None:
    prompts = ['a satellite image of farmland'] * 3
    images = synth.generate(None, prompts, seeds=[7, 8, 9], metadata=PLACES)
    assert images.shape == (3, 3, SIZE, SIZE) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 255
    # one sample depends only on its own seed and metadata, whatever the batching
    synth.batch_size = 1
    try:
        one = synth.generate(None, prompts[1:2], seeds=[8], metadata=PLACES[1:2])
    finally:
        synth.batch_size = 8
    torch.testing.assert_close(one[0], images[1], atol=1e-2, rtol=0)
    moved = PLACES.clone()
    moved[:, 5] = 12  # December instead
    other = synth.generate(None, prompts, seeds=[7, 8, 9], metadata=moved)
    assert (other[:2] - images[:2]).abs().amax() > 0.1
    samples = synth.synthesize(None, prompts[:1], [7], metadata=PLACES[:1])
    assert set(samples[0]) == {'image', 'prompt', 'metadata', 'source', 'seed'}
    torch.testing.assert_close(samples[0]['image'], images[0], atol=1e-2, rtol=0)


def test_requests_lacking_conditions_are_refused(synth: Synthesizer) -> None:
    masks = torch.zeros(1, SIZE, SIZE, dtype=torch.long)
    with pytest.raises(ValueError, match=r'needs metadata=\[B, 7\]'):
        synth.generate(None, ['x'])
    with pytest.raises(ValueError, match='takes no masks'):
        synth.generate(masks, ['x'], metadata=PLACES[:1])
    with pytest.raises(ValueError, match=r'expected shape \[1, 7\].*got \[2, 7\]'):
        synth.generate(None, ['x'], metadata=PLACES[:2])
    earthsynth = Synthesizer.tiny(image_size=SIZE, num_inference_steps=1)
    with pytest.raises(ValueError, match='needs masks'):
        earthsynth.generate(None, ['x'])
    with pytest.raises(ValueError, match='not conditioned on metadata'):
        earthsynth.generate(masks, ['x'], metadata=PLACES[:1])


def test_bare_unet_folder_takes_base_parts(release: Path, tmp_path: Path) -> None:
    synth = Synthesizer.from_pretrained(
        release / 'checkpoint-50', base=release, num_inference_steps=1
    )
    assert synth.takes('metadata')
    with pytest.raises(ValueError, match='cannot load the parts around the DiffusionSat UNet'):
        Synthesizer.from_pretrained(release / 'checkpoint-50', base=tmp_path)


def test_tiny_family() -> None:
    synth = Synthesizer.tiny(image_size=SIZE, family='diffusionsat', num_inference_steps=1)
    images = synth.generate(None, ['a'], metadata=PLACES[:1])
    assert images.shape == (1, 3, SIZE, SIZE)


# ---------------------------------------------------------------------- where metadata comes from


def test_mini_corpus_metadata_changes_appearance(tmp_path: Path) -> None:
    root = make_mini_corpus(tmp_path, seed=1, size=SIZE, num_train=48, num_val=4)
    dataset = EarthSynthMini(tmp_path, seed=1, size=SIZE, num_train=48, num_val=4)
    assert dataset.root == root
    vegetation = [CLASS_IDS[name] for name in ('grass', 'tree', 'forest land', 'agriculture land')]
    summer, winter, gsd_vs_buildings = [], [], []
    for i in range(len(dataset)):
        sample = dataset[i]
        lon, lat, gsd, cloud, year, month, day = sample['metadata'].tolist()
        assert -180 <= lon <= 180 and -60 <= lat <= 60 and 0 < gsd < 1 and cloud == 0
        assert 2015 <= year <= 2023 and 1 <= month <= 12 and 1 <= day <= 28
        where = torch.isin(sample['mask'], torch.tensor(vegetation))
        if where.sum() > 20:
            rgb = sample['image'][:, where]
            chroma = float((rgb[1] / rgb.sum(0).clamp(min=1)).mean())
            green = greenness(month, lat)
            if green > 0.75:
                summer.append(chroma)
            elif green < 0.25:
                winter.append(chroma)
        if sample['source'] == 'LoveDA':
            share = float((sample['mask'] == CLASS_IDS['building']).float().mean())
            gsd_vs_buildings.append((gsd, share))
    assert summer and winter
    assert sum(summer) / len(summer) > sum(winter) / len(winter) + 0.02
    gsd_vs_buildings.sort()
    half = len(gsd_vs_buildings) // 2
    fine = sum(s for _, s in gsd_vs_buildings[:half]) / half
    coarse = sum(s for _, s in gsd_vs_buildings[half:]) / (len(gsd_vs_buildings) - half)
    assert fine > coarse  # finer GSD: larger buildings


def write_geotiff(path: Path, crs: str, left: float, top: float, res: float) -> None:
    transform = rasterio.transform.from_origin(left, top, res, res)
    profile = dict(driver='GTiff', width=16, height=16, count=3, dtype='uint8', crs=crs)
    with rasterio.open(path, 'w', transform=transform, **profile) as dst:
        dst.write(np.full((3, 16, 16), 100, dtype=np.uint8))


class DatedTiles(RasterDataset):
    filename_glob = 'tile_*.tif'
    filename_regex = r'^tile_(?P<date>\d{8})\.tif$'
    date_format = '%Y%m%d'


def test_metadata_from_a_geodataset_sample(tmp_path: Path) -> None:
    # UTM 31N at its central meridian (3 deg E), 10 m pixels, acquired 2021-07-14
    (tmp_path / 'utm').mkdir()
    write_geotiff(tmp_path / 'utm' / 'tile_20210714.tif', 'EPSG:32631', 499920, 5_000_080, 10)
    dataset = DatedTiles(tmp_path / 'utm')
    sample = dataset[dataset.bounds]
    lon, lat, gsd, cloud, year, month, day = metadata_from_geo_sample(
        sample, crs=dataset.crs
    ).tolist()
    assert lon == pytest.approx(3.0, abs=1e-6) and 45.0 < lat < 45.3
    assert gsd == pytest.approx(10.0) and math.isnan(cloud)
    assert (year, month, day) == (2021, 7, 14)
    # a sampler's query carries no resolution: the dataset's is passed
    query = next(iter(GridGeoSampler(dataset, size=8, stride=8)))
    batch = stack_samples([dataset[query], dataset[query]])
    metadata = metadata_from_geo_sample(batch, res=dataset.res, crs=dataset.crs)
    assert metadata.shape == (2, 7) and metadata[:, 2].eq(10).all()
    if not isinstance(batch['bounds'], torch.Tensor):  # 0.8's slices carry no step
        assert math.isnan(metadata_from_geo_sample(batch, crs=dataset.crs)[0, 2])
    # degrees: a 1e-4 deg pixel at 60 N is ~5.56 m wide and ~11.12 m tall
    (tmp_path / 'wgs').mkdir()
    write_geotiff(tmp_path / 'wgs' / 'tile_20200101.tif', 'EPSG:4326', 10.0, 60.0008, 1e-4)
    wgs = DatedTiles(tmp_path / 'wgs')
    lon, lat, gsd, *_ = metadata_from_geo_sample(wgs[wgs.bounds], crs=wgs.crs).tolist()
    assert lon == pytest.approx(10.0008) and lat == pytest.approx(60.0)
    assert gsd == pytest.approx((5.559 + 11.119) / 2, rel=1e-3)
    with pytest.raises(ValueError, match='expected TorchGeo GeoDataset keys bounds and crs'):
        metadata_from_geo_sample({'image': torch.zeros(3, 8, 8)})


# ---------------------------------------------------------------------- training

REPO = Path(__file__).resolve().parents[1]


def test_task_condition_and_gradients(tmp_path: Path) -> None:
    datamodule = EarthSynthMiniDataModule(
        root=tmp_path, tile_size=SIZE, num_train=4, num_val=4, batch_size=4, normalize=False
    )
    datamodule.setup('fit')
    batch = next(iter(datamodule.train_dataloader()))
    assert batch['metadata'].shape == (4, 7)
    task = DiffusionSatTask(preset='tiny', image_size=SIZE, metadata_dropout=0.0)
    assert isinstance(task.unet, DiffusionSatUNet)
    assert task.noise_scheduler.config.prediction_type == 'v_prediction'
    task.train()
    inputs = task.condition_inputs(batch, (SIZE, SIZE))
    torch.testing.assert_close(inputs['metadata'], normalize_metadata(batch['metadata']))
    task.hparams['metadata_dropout'] = 1.0
    assert task.condition_inputs(batch, (SIZE, SIZE))['metadata'].eq(0).all()
    task.hparams['metadata_dropout'] = 0.5
    dropped = task.condition_inputs(batch, (SIZE, SIZE))['metadata'] == 0
    assert 0 < dropped.float().mean() < 1  # per field, not per sample
    task.hparams['metadata_dropout'] = 0.0
    loss = task.diffusion_loss(batch)
    loss.backward()
    # the output layers start at zero: they are the first to learn
    grads = [embedding.linear_2.weight.grad for embedding in task.unet.metadata_embedding]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    with pytest.raises(ValueError, match=r'needs batches with metadata \[B, 7\]'):
        task.condition_inputs({'image': batch['image'], 'prompt': batch['prompt']}, (32, 32))
    with pytest.raises(ValueError, match=r'metadata_dropout must be in \[0, 1\]'):
        DiffusionSatTask(metadata_dropout=1.5)


def test_cli_fit_tiny_config_and_export_generates(tmp_path: Path) -> None:
    cli_main(
        [
            'fit',
            '--config',
            str(REPO / 'configs' / 'diffusionsat_tiny.yaml'),
            '--trainer.fast_dev_run',
            '2',
            '--trainer.default_root_dir',
            str(tmp_path),
            '--data.init_args.root',
            str(tmp_path / 'cache'),
            '--data.init_args.num_train',
            '8',
            '--data.init_args.num_val',
            '4',
            '--data.init_args.batch_size',
            '4',
            '--model.init_args.val_inference_steps',
            '2',
            '--model.init_args.val_num_samples',
            '2',
            '--model.init_args.vae_warmup_steps',
            '0',
        ]
    )
    export = tmp_path / 'export'
    assert (export / 'unet' / 'config.json').exists()
    synth = Synthesizer.from_pretrained(export, num_inference_steps=2)
    assert synth.takes('metadata')
    summer, winter = PLACES[:1].clone(), PLACES[:1].clone()
    winter[0, 5] = 1
    images = synth.generate(None, ['x', 'x'], seeds=[0, 0], metadata=torch.cat([summer, winter]))
    assert (images[0] - images[1]).abs().amax() > 0.1  # metadata changes the output


def test_cli_print_config_sd21(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        config = str(REPO / 'configs' / 'diffusionsat_sd21.yaml')
        cli_main(['fit', '--config', config, '--print_config'])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert 'stabilityai/stable-diffusion-2-1' in out and 'DiffusionSatTask' in out
    assert 'strategy: ddp' in out and 'snr_gamma: 5.0' in out and 'metadata_dropout: 0.1' in out
