# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Do generated Sentinel-2 images have the spectra of their classes? And follow their masks?

Trains the tiny multispectral generator (``MultispectralControlNet``, 13 Sentinel-2 bands in
reflectance, tiny preset: VAE warm-up, then ControlNet + UNet) on the mini corpus's
13-band scenes (``EarthSynthMiniMultispectral``), generates one image per held-out mask, and
scores, per class present in the held-out masks:

* spectral fidelity: the spectral angle (degrees) between the class's mean spectrum in the
  generated images and in the real images, and the mean absolute error per band
  (reflectance); lower is better;
* mask fidelity: a 13-band pixel classifier fitted on real training scenes segments the
  generated images, scored (mIoU) against the masks they were generated from.

Reference rows: the real held-out images (mask fidelity's ceiling), the tiny VAE's
reconstructions of them (the ceiling of any generator over this VAE), and the untrained twin
(the floor).

Usage: uv run python benchmarks/spectral_fidelity.py [--steps 1200] [--vae-steps 300]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from provenance import add_results_argument, write_result
from torch import Tensor

from torchgeo_earthsynth.datamodules import EarthSynthMiniMultispectralDataModule
from torchgeo_earthsynth.datasets import EarthSynthMiniMultispectral
from torchgeo_earthsynth.encodings import SpectralBands
from torchgeo_earthsynth.lightning_modules import MultispectralControlNet
from torchgeo_earthsynth.metrics import PixelClassifier, mask_fidelity
from torchgeo_earthsynth.vocabulary import VOCABULARY


def class_spectra(reflectance: Tensor, masks: Tensor) -> dict[int, Tensor]:
    """Mean spectrum [C] of each class's pixels (reflectance [N, C, H, W], masks [N, H, W])."""
    pixels = reflectance.permute(0, 2, 3, 1).reshape(-1, reflectance.shape[1])
    labels = masks.reshape(-1)
    return {int(c): pixels[labels == c].mean(0) for c in labels.unique()}


def spectral_scores(generated: Tensor, real: Tensor, masks: Tensor) -> dict[str, dict[str, float]]:
    """Per class: spectral angle (degrees) and per-band mean absolute error vs real."""
    ours, theirs = class_spectra(generated, masks), class_spectra(real, masks)
    scores = {}
    for cls, spectrum in theirs.items():
        cosine = torch.nn.functional.cosine_similarity(ours[cls], spectrum, dim=0).clamp(-1, 1)
        scores[VOCABULARY[cls]] = {
            'angle_deg': round(float(torch.rad2deg(torch.arccos(cosine))), 2),
            'band_mae': round(float((ours[cls] - spectrum).abs().mean()), 4),
        }
    return scores


def summary(rows: dict[str, dict[str, float]], miou: float) -> dict[str, Any]:
    angles = [row['angle_deg'] for row in rows.values()]
    errors = [row['band_mae'] for row in rows.values()]
    return {
        'mean_angle_deg': round(sum(angles) / len(angles), 2),
        'mean_band_mae': round(sum(errors) / len(errors), 4),
        'mask_miou': round(miou, 3),
        'per_class': rows,
    }


def generate(task: MultispectralControlNet, masks: Tensor, prompts: list[str], args: Any) -> Tensor:
    """One image per mask, 0..255 per band (seeds 0..N-1)."""
    task.eval()
    synth = task.synthesizer(args.sample_steps, args.guidance)
    return synth.generate(masks, prompts, seeds=list(range(len(masks))))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=1200, help='diffusion training steps')
    parser.add_argument('--vae-steps', type=int, default=300, help='VAE warm-up steps')
    parser.add_argument('--num-train', type=int, default=256, help='training scenes')
    parser.add_argument('--num-eval', type=int, default=32, help='held-out scenes scored')
    parser.add_argument('--size', type=int, default=32, help='tile size in pixels')
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--sample-steps', type=int, default=20, help='sampling steps')
    parser.add_argument('--guidance', type=float, default=1.0, help='guidance scale')
    parser.add_argument('--root', type=Path, default=None, help='mini corpus cache folder')
    add_results_argument(parser)
    args = parser.parse_args(argv)

    root = args.root or Path(tempfile.mkdtemp())
    corpus = {'size': args.size, 'num_train': args.num_train, 'num_val': args.num_eval}
    train = EarthSynthMiniMultispectral(root, 'train', **corpus)
    held_out = EarthSynthMiniMultispectral(root, 'val', **corpus)
    bands: SpectralBands = held_out.bands
    real = torch.stack([held_out[i]['image'] for i in range(len(held_out))])
    masks = torch.stack([held_out[i]['mask'] for i in range(len(held_out))])
    prompts = [held_out[i]['prompt'] for i in range(len(held_out))]
    fit_count = min(len(train), 128)
    fit_images = torch.stack([bands.from_physical(train[i]['image']) for i in range(fit_count)])
    fit_masks = torch.stack([train[i]['mask'] for i in range(fit_count)])
    segmenter = PixelClassifier(bands=len(bands)).fit(fit_images, fit_masks, seed=0).eval()

    task = MultispectralControlNet(
        variant='sentinel2', image_size=args.size, vae_warmup_steps=args.vae_steps, seed=0
    )
    untrained = copy.deepcopy(task)
    datamodule = EarthSynthMiniMultispectralDataModule(
        root=root,
        tile_size=args.size,
        num_train=args.num_train,
        num_val=args.num_eval,
        batch_size=args.batch_size,
    )
    start = time.perf_counter()
    task.train()
    trainer = pl.Trainer(
        accelerator='cpu',
        max_steps=args.vae_steps + args.steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(task, datamodule=datamodule)
    train_seconds = time.perf_counter() - start

    real_255 = bands.from_physical(real).clamp(0, 255)
    with torch.no_grad():
        latents = task.vae.encode(real_255 / 127.5 - 1).latent_dist.mean
        reconstructed = ((task.vae.decode(latents).sample + 1) * 127.5).clamp(0, 255)
    images = {
        'real held-out images': real_255,
        'VAE reconstruction (ceiling)': reconstructed,
        'trained generator': generate(task, masks, prompts, args),
        'untrained twin': generate(untrained, masks, prompts, args),
    }
    rows = {}
    for name, values in images.items():
        fidelity = mask_fidelity(segmenter, values, masks).miou
        rows[name] = summary(spectral_scores(bands.to_physical(values), real, masks), fidelity)
        row = rows[name]
        print(
            f'{name}: spectral angle {row["mean_angle_deg"]:.2f} deg, band MAE '
            f'{row["mean_band_mae"]:.4f}, mask mIoU {row["mask_miou"]:.3f}'
        )
    result = {
        'steps': args.steps,
        'vae_steps': args.vae_steps,
        'train_seconds': round(train_seconds, 1),
        'scenes': len(held_out),
        'bands': list(bands.names),
        'rows': rows,
    }
    write_result('spectral_fidelity', result, args.results, argv)
    return result


if __name__ == '__main__':
    main()
