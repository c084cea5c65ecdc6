# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The multispectral family: a C-band VAE, its training task, export and Synthesizer."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from diffusers import AutoencoderKL

from torchgeo_earthsynth.datamodules import EarthSynthMiniMultispectralDataModule
from torchgeo_earthsynth.datasets import MULTISPECTRAL_BANDS, EarthSynthMiniMultispectral
from torchgeo_earthsynth.encodings.bands import SENTINEL2_BANDS, SpectralBands
from torchgeo_earthsynth.families import MultispectralFamily, build_pipeline
from torchgeo_earthsynth.lightning_modules import DiffusersExport, MultispectralControlNet
from torchgeo_earthsynth.models import (
    RGB_BANDS,
    MultispectralAutoencoderKL,
    tiny_controlnet,
    tiny_multispectral_vae,
    tiny_parts,
)
from torchgeo_earthsynth.synthesis import Synthesizer

SIZE = 32
RGBI = MULTISPECTRAL_BANDS['rgbi']


def test_vae_config_round_trips_its_bands(tmp_path: Path) -> None:
    vae = tiny_multispectral_vae(MULTISPECTRAL_BANDS['sentinel2'], seed=3, sample_size=SIZE)
    assert vae.encoder.conv_in.in_channels == 13 and vae.decoder.conv_out.out_channels == 13
    vae.save_pretrained(tmp_path / 'vae')
    assert (tmp_path / 'vae' / 'diffusion_pytorch_model.safetensors').is_file()
    config = json.loads((tmp_path / 'vae' / 'config.json').read_text())
    assert config['band_names'] == list(SENTINEL2_BANDS) and config['in_channels'] == 13
    loaded = MultispectralAutoencoderKL.from_pretrained(tmp_path / 'vae')
    assert loaded.bands == MULTISPECTRAL_BANDS['sentinel2']
    assert loaded.config.block_out_channels == vae.config.block_out_channels
    x = torch.rand(1, 13, SIZE, SIZE) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).sample, vae(x).sample)
    # plain diffusers reads the same folder as a 13-channel AutoencoderKL
    assert AutoencoderKL.from_pretrained(tmp_path / 'vae').encoder.conv_in.in_channels == 13


def test_vae_refuses_a_channel_count_other_than_its_bands() -> None:
    with pytest.raises(ValueError, match='in_channels: 3 does not match the 4 bands'):
        MultispectralAutoencoderKL(
            band_names=RGBI.names,
            band_minimum=RGBI.minimum,
            band_maximum=RGBI.maximum,
            band_units='dn8',
            in_channels=3,
        )
    with pytest.raises(ValueError, match=r'band IR: maximum 0 must exceed minimum 0\.0'):
        MultispectralAutoencoderKL(
            band_names=RGBI.names, band_minimum=(0.0,) * 4, band_maximum=(1, 1, 1, 0)
        )


def _rgbi_synth() -> Synthesizer:
    parts = tiny_parts(seed=0, image_size=SIZE)
    parts.vae = tiny_multispectral_vae(RGBI, seed=1, sample_size=SIZE)
    pipeline = build_pipeline(parts, tiny_controlnet(parts.unet))
    return Synthesizer(pipeline, num_inference_steps=2, guidance_scale=2.0)


def test_untrained_four_band_generator_outputs_every_band_in_0_255() -> None:
    synth = _rgbi_synth()
    assert any(isinstance(f, MultispectralFamily) for f in synth.families)
    assert synth.bands == RGBI
    masks = torch.zeros(2, SIZE, SIZE, dtype=torch.long)
    images = synth.generate(masks, ['a', 'b'], seeds=[0, 1])
    assert images.shape == (2, 4, SIZE, SIZE) and images.dtype == torch.float32
    assert 0 <= float(images.min()) and float(images.max()) <= 255
    assert not torch.equal(images[0], images[1])  # seeds differ


def test_rgb_generators_say_their_bands_are_8_bit_rgb() -> None:
    synth = Synthesizer.tiny(image_size=SIZE, num_inference_steps=1)
    assert synth.bands == RGB_BANDS
    assert synth.bands == SpectralBands(('R', 'G', 'B'), (0, 0, 0), (255, 255, 255), 'dn8')
    assert not any(isinstance(f, MultispectralFamily) for f in synth.families)


def test_family_refuses_images_without_the_vae_bands() -> None:
    family = MultispectralFamily(_rgbi_synth().pipeline)
    with pytest.raises(ValueError, match=r'expected \[B, 4, H, W\] for the VAE bands'):
        family.finish(None, torch.zeros(1, 3, SIZE, SIZE))  # type: ignore[arg-type]
    out = family.finish(None, torch.full((1, 4, 2, 2), 300.0))  # type: ignore[arg-type]
    assert float(out.max()) == 255


def test_task_bands_come_from_a_variant_or_the_fields() -> None:
    with pytest.raises(ValueError, match='give either variant or band_names'):
        MultispectralControlNet(variant='rgbi', band_names=['R'], image_size=SIZE)
    with pytest.raises(ValueError, match='variant must be one of'):
        MultispectralControlNet(variant='landsat', image_size=SIZE)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='give band_names, band_minimum and band_maximum'):
        MultispectralControlNet(variant=None, band_names=['R'], image_size=SIZE)


def test_task_builds_its_band_vae_at_the_tiny_vae_size() -> None:
    task = MultispectralControlNet(
        variant='rgbi', image_size=SIZE, tiny_vae_width=32, tiny_vae_layers=2
    )
    assert list(task.vae.config.block_out_channels) == [32, 64]
    assert task.vae.config.layers_per_block == 2


def test_task_maps_physical_units_to_0_255_per_band() -> None:
    task = MultispectralControlNet(
        variant=None,
        band_names=['B04', 'B08'],
        band_minimum=[0.0, 0.0],
        band_maximum=[0.5, 1.0],
        image_size=SIZE,
    )
    assert task.vae.config.in_channels == 2 and task.bands.names == ('B04', 'B08')
    image = torch.tensor([0.25, 0.25]).view(1, 2, 1, 1).expand(1, 2, SIZE, SIZE)
    batch = {'image': image.clone(), 'prompt': ['x']}
    scaled = task.scaled(batch)
    torch.testing.assert_close(scaled['image'][0, :, 0, 0], torch.tensor([127.5, 63.75]))
    assert torch.equal(batch['image'], image)  # the loader's batch is left as it was
    assert float(task.scaled({'image': image * 4})['image'].max()) == 255  # clamped
    with pytest.raises(ValueError, match=r"batch\['image'\] \[1, 3, 32, 32\]: expected \[B, 2"):
        task.scaled({'image': torch.zeros(1, 3, SIZE, SIZE)})


def test_training_sees_images_on_the_0_255_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    task = MultispectralControlNet(variant='rgbi', image_size=SIZE, vae_warmup_steps=0)
    seen: list[torch.Tensor] = []

    def loss(batch: dict[str, Any], generator: Any = None) -> torch.Tensor:
        seen.append(batch['image'])
        return torch.zeros(())

    monkeypatch.setattr(task, 'diffusion_loss', loss)
    monkeypatch.setattr(task, 'log', lambda *args, **kwargs: None)
    physical = torch.full((1, 4, SIZE, SIZE), 51.0)  # dn8 keeps its values
    task.training_step({'image': physical, 'prompt': ['x']}, 0)
    sentinel = MultispectralControlNet(variant='sentinel2', image_size=SIZE)
    monkeypatch.setattr(sentinel, 'diffusion_loss', loss)
    monkeypatch.setattr(sentinel, 'log', lambda *args, **kwargs: None)
    sentinel.training_step({'image': torch.full((1, 13, SIZE, SIZE), 0.2), 'prompt': ['x']}, 0)
    assert float(seen[0].mean()) == pytest.approx(51.0)
    assert float(seen[1].mean()) == pytest.approx(51.0)  # reflectance 0.2 -> 51


@pytest.fixture(scope='module')
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny 13-band task trained 3 steps (1 VAE warm-up), validated once, exported."""
    out = tmp_path_factory.mktemp('ms-train')
    task = MultispectralControlNet(
        variant='sentinel2',
        image_size=SIZE,
        vae_warmup_steps=1,
        lr=0.05,
        val_num_samples=2,
        val_inference_steps=2,
        seed=0,
    )
    datamodule = EarthSynthMiniMultispectralDataModule(
        root=out / 'mini', tile_size=SIZE, num_train=8, num_val=4, batch_size=4
    )
    before = {k: v.clone() for k, v in task.controlnet.state_dict().items()}
    trainer = pl.Trainer(
        accelerator='cpu',
        max_steps=3,
        limit_val_batches=1,
        val_check_interval=3,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        default_root_dir=out,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[DiffusersExport(dirpath=out / 'export')],
    )
    trainer.fit(task, datamodule)
    return {'task': task, 'before': before, 'out': out, 'trainer': trainer}


def test_tiny_task_trains_validates_and_exports(trained: dict[str, Any]) -> None:
    task, out = trained['task'], trained['out']
    assert trained['trainer'].global_step == 3
    after = task.controlnet.state_dict()
    assert any(not torch.equal(after[k], v) for k, v in trained['before'].items())
    assert list((out / 'samples').glob('val_step*.png'))  # an RGB composite grid, 13 bands
    meta = json.loads((out / 'export' / 'earthsynth.json').read_text())
    assert meta['task'] == 'multispectral' and meta['bands']['names'] == list(SENTINEL2_BANDS)
    index = json.loads((out / 'export' / 'model_index.json').read_text())
    assert index['vae'][1] == 'MultispectralAutoencoderKL'


def test_export_generates_13_bands_deterministic_per_seed(trained: dict[str, Any]) -> None:
    export = trained['out'] / 'export'
    synth = Synthesizer.from_pretrained(export, num_inference_steps=2, guidance_scale=2.0)
    assert synth.bands.names == SENTINEL2_BANDS and synth.bands.units == 'reflectance'
    assert isinstance(synth.pipeline.vae, MultispectralAutoencoderKL)
    scene = EarthSynthMiniMultispectral(
        trained['out'] / 'mini', split='val', size=SIZE, num_train=8, num_val=4
    )[0]
    masks = scene['mask'][None].expand(2, -1, -1)
    images = synth.generate(masks, [scene['prompt']] * 2, seeds=[5, 6])
    assert images.shape == (2, 13, SIZE, SIZE)
    assert 0 <= float(images.min()) and float(images.max()) <= 255
    assert float(images.std()) > 1  # not a flat image
    again = synth.generate(masks[:1], [scene['prompt']], seeds=[5])
    torch.testing.assert_close(again[0], images[0], atol=0.05, rtol=0)
    assert (images[0] - images[1]).abs().max() > 1
    reflectance = synth.bands.to_physical(images)
    assert 0 <= float(reflectance.min()) and float(reflectance.max()) <= 1


def test_multispectral_tiny_config_trains_from_the_cli(
    fit_fast: Callable[..., Path], tmp_path: Path
) -> None:
    config = Path(__file__).resolve().parents[1] / 'configs' / 'multispectral_tiny.yaml'
    # the config exports where configs/evaluate_eurosat_mini.yaml loads from; the test's own folder
    export = fit_fast(config, '--trainer.callbacks.init_args.dirpath', str(tmp_path / 'export'))
    meta = json.loads((export / 'earthsynth.json').read_text())
    assert meta['bands']['names'] == list(SENTINEL2_BANDS) and meta['global_step'] == 4
    vae = json.loads((export / 'vae' / 'config.json').read_text())
    assert vae['_class_name'] == 'MultispectralAutoencoderKL' and vae['in_channels'] == 13
    assert list((export.parent / 'samples').glob('val_step*.png'))  # 13 bands drawn as RGB


def test_pretrained_preset_takes_a_base_whose_vae_has_the_bands(trained: dict[str, Any]) -> None:
    base = str(trained['out'] / 'export')
    task = MultispectralControlNet(
        variant='sentinel2', preset='pretrained', base_model=base, val_num_samples=0
    )
    assert isinstance(task.vae, MultispectralAutoencoderKL)
    assert task.vae.bands == task.bands == MULTISPECTRAL_BANDS['sentinel2']
    with pytest.raises(ValueError, match=r"expected a MultispectralAutoencoderKL of \['R', 'G'"):
        MultispectralControlNet(variant='rgbi', preset='pretrained', base_model=base)


def test_plain_diffusers_loads_the_export_with_its_vae_class(trained: dict[str, Any]) -> None:
    from diffusers import StableDiffusionControlNetPipeline

    pipeline = StableDiffusionControlNetPipeline.from_pretrained(
        trained['out'] / 'export',
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    assert isinstance(pipeline.vae, MultispectralAutoencoderKL)
    assert pipeline.vae.bands.names == SENTINEL2_BANDS


def test_the_eurosat_evaluation_loads_where_the_tiny_config_exports() -> None:
    """The documented two commands chain: fit's export folder is evaluate's generator."""
    import yaml

    configs = Path(__file__).resolve().parents[1] / 'configs'
    fit = yaml.safe_load((configs / 'multispectral_tiny.yaml').read_text())
    (export,) = [
        callback['init_args']['dirpath']
        for callback in fit['trainer']['callbacks']
        if callback['class_path'].endswith('DiffusersExport')
    ]
    evaluate = yaml.safe_load((configs / 'evaluate_eurosat_mini.yaml').read_text())
    loader = evaluate['synthetic']['init_args']['synthesizer']['init_args']
    assert loader['pretrained'] == export
