# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The temporal family: a Synthesizer over DiffusionSat's temporal ControlNet."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from torchgeo_earthsynth.datasets import EarthSynthMiniTemporal
from torchgeo_earthsynth.families import (
    TemporalFamily,
    build_pipeline,
    build_text_pipeline,
    normalize_frame_metadata,
)
from torchgeo_earthsynth.models import (
    TemporalControlNetPipeline,
    normalize_metadata,
    temporal_controlnet_from_unet,
    tiny_diffusionsat_parts,
)
from torchgeo_earthsynth.synthesis import Synthesizer

SIZE = 32


@pytest.fixture(scope='module')
def synth() -> Synthesizer:
    parts = tiny_diffusionsat_parts(seed=0, image_size=SIZE)
    torch.manual_seed(0)
    controlnet = temporal_controlnet_from_unet(
        parts.unet, conditioning_embedding_out_channels=(8, 16)
    )
    with torch.no_grad():  # a trained-looking ControlNet: its residuals reach the UNet
        for conv in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            conv.weight.normal_(0, 0.2)
        controlnet.controlnet_cond_embedding.conv_out.weight.normal_(0, 0.2)
        controlnet.mixing_attns[0].fill_(0.5)
        for embedding in controlnet.metadata_embedding:  # zero until trained: metadata counts
            embedding.linear_2.weight.normal_(0, 0.2)
    pipeline = build_pipeline(parts, controlnet, TemporalControlNetPipeline)
    return Synthesizer(pipeline, num_inference_steps=2, guidance_scale=2.0, batch_size=2)


def _metadata(count: int, year: float) -> torch.Tensor:
    # lon, lat, gsd, cloud cover, year, month, day
    return torch.tensor([[-97.7, 30.3, 10.0, 0.0, year, 6.0, 1.0]] * count)


def _request(frames: int = 3, count: int = 2, seed: int = 0) -> dict[str, torch.Tensor | list[str]]:
    generator = torch.Generator().manual_seed(seed)
    history = torch.stack([_metadata(count, 2016 + t) for t in range(frames)], dim=-1)
    return {
        'prompt': ['a satellite image of farmland'] * count,
        'frames': torch.rand(count, 3, frames, SIZE, SIZE, generator=generator),
        'frame_metadata': history,
        'metadata': _metadata(count, 2020),
    }


def test_the_family_serves_the_temporal_pipeline(synth: Synthesizer) -> None:
    assert [type(f) for f in synth.families if isinstance(f, TemporalFamily)]
    assert {'frames', 'metadata'} <= synth.needs
    assert synth.takes('frame_metadata') and not synth.takes('low_res')


def test_generates_the_target_date_from_its_frames(synth: Synthesizer) -> None:
    request = _request()
    images = synth.sample(request, seeds=[0, 1])
    assert images.shape == (2, 3, SIZE, SIZE)
    assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 255
    # same seeds, same request: same images; other frames or another history: other images
    torch.testing.assert_close(synth.sample(request, seeds=[0, 1]), images)
    other_frames = synth.sample({**request, 'frames': _request(seed=1)['frames']}, seeds=[0, 1])
    assert not torch.allclose(other_frames, images)
    history = request['frame_metadata'].clone()  # type: ignore[union-attr]
    history[:, 4] -= 10  # the same frames, ten years earlier
    assert not torch.allclose(synth.sample({**request, 'frame_metadata': history}, [0, 1]), images)
    # any number of frames (attention across them has no fixed length)
    assert synth.sample(_request(frames=2), seeds=[0, 1]).shape == (2, 3, SIZE, SIZE)


def test_refuses_frames_that_do_not_fit(synth: Synthesizer) -> None:
    request = _request()
    with pytest.raises(ValueError, match=r'frames: expected \[2, 3, frames, h, w\]'):
        synth.sample({**request, 'frames': request['frames'][:, :, 0]})  # type: ignore[index]
    with pytest.raises(ValueError, match=r'frame_metadata: expected \[2, 7, 3\]'):
        synth.sample({**request, 'frame_metadata': torch.zeros(2, 7, 2)})
    with pytest.raises(ValueError, match='needs frames'):
        synth.sample({key: v for key, v in request.items() if key != 'frames'})
    with pytest.raises(ValueError, match='does not fit a 16x16 output'):
        synth.sample(request, size=(16, 16))


def test_frame_metadata_is_normalised_frame_by_frame() -> None:
    history = torch.stack([_metadata(2, 2016.0), _metadata(2, 2018.0)], dim=-1)
    history[0, 3, 1] = math.nan  # unknown cloud cover: 0, as DiffusionSat's dropout
    normalised = normalize_frame_metadata(history)
    assert normalised.shape == (2, 7, 2)
    for t in range(2):
        expected = normalize_metadata(history[..., t])
        torch.testing.assert_close(normalised[..., t], expected)
    assert normalised[0, 3, 1] == 0


def test_temporal_tiny_config_trains_from_the_cli(tmp_path: Path) -> None:
    from torchgeo_earthsynth.cli import main as cli_main

    config = Path(__file__).resolve().parents[1] / 'configs' / 'temporal_tiny.yaml'
    cli_main(
        [
            'fit',
            '--config',
            str(config),
            '--trainer.fast_dev_run',
            '1',
            '--trainer.default_root_dir',
            str(tmp_path),
            '--data.init_args.root',
            str(tmp_path / 'mini'),
            '--data.init_args.num_train',
            '8',
            '--data.init_args.num_val',
            '4',
            '--data.init_args.batch_size',
            '4',
            '--model.init_args.val_num_samples',
            '2',
            '--model.init_args.val_inference_steps',
            '2',
        ]
    )
    export = tmp_path / 'export'
    assert '"task": "temporal"' in (export / 'earthsynth.json').read_text()
    loaded = Synthesizer.from_pretrained(export, num_inference_steps=2, guidance_scale=1.0)
    assert loaded.takes('frames') and loaded.takes('frame_metadata')
    sequence = EarthSynthMiniTemporal(tmp_path / 'mini', size=32, num_train=8, num_val=4)[0]
    request = {
        'prompt': [sequence['prompt']],
        'frames': sequence['frames'][None] / 255,
        'frame_metadata': sequence['frame_metadata'][None],
        'metadata': sequence['metadata'][None],
    }
    assert loaded.sample(request).shape == (1, 3, 32, 32)


def test_task_refuses_batches_without_frames() -> None:
    from torchgeo_earthsynth.lightning_modules import TemporalControlNetTask

    task = TemporalControlNetTask(image_size=32, val_num_samples=0)
    batch = {'image': torch.zeros(2, 3, 32, 32), 'metadata': torch.zeros(2, 7)}
    with pytest.raises(ValueError, match=r'needs batches with frames \[B, 3, T, 32, 32\]'):
        task.condition_inputs(batch, (32, 32))
    with pytest.raises(ValueError, match='metadata_dropout'):
        TemporalControlNetTask(metadata_dropout=2.0)


def test_their_release_folder_loads_through_from_pretrained(
    synth: Synthesizer, tmp_path: Path
) -> None:
    """controlnet3d-mixattn_sd21_md7norm_texas: their pipeline parts + controlnet/ (3D)."""
    release = tmp_path / 'controlnet3d-mixattn_sd21_md7norm_texas'
    pipeline = synth.pipeline
    build_text_pipeline(pipeline).save_pretrained(release)
    pipeline.controlnet.save_pretrained(release / 'controlnet')
    config = json.loads((release / 'controlnet' / 'config.json').read_text())
    config['_class_name'] = 'ControlNetModel3D'  # their class, as their training writes it
    config['_diffusers_version'] = '0.17.0.dev0'
    (release / 'controlnet' / 'config.json').write_text(json.dumps(config))
    loaded = Synthesizer.from_pretrained(release, num_inference_steps=2, guidance_scale=2.0)
    assert isinstance(loaded.pipeline, TemporalControlNetPipeline)
    ours, theirs = pipeline.controlnet.state_dict(), loaded.pipeline.controlnet.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    loaded.batch_size = synth.batch_size
    request = _request()
    # the same images up to float32 rounding (1e-4 of 255: parts rebuilt from their configs)
    expected = synth.sample(request, [0, 1])
    torch.testing.assert_close(loaded.sample(request, [0, 1]), expected, atol=1e-3, rtol=0)
    # the ControlNet alone needs the checkpoint it steers: named, not guessed
    with pytest.raises(ValueError, match='needs base= the DiffusionSat checkpoint'):
        Synthesizer.from_pretrained(release / 'controlnet')
