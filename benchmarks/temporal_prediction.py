# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Does the temporal ControlNet predict a place's image at a target date better than copying?

Trains the tiny temporal ControlNet (``TemporalControlNetTask``, DiffusionSat's
``ControlNetModel3D`` layout, tiny preset) briefly on the mini corpus's sequences
(``EarthSynthMiniTemporal``: three earlier frames a year apart, each in its own season; half
the places gain buildings before the target), then predicts each held-out (val) sequence's
target from its frames and dates, and prints PSNR and SSIM against the real target for the
untrained and the trained model, the copy-the-last-frame baseline (what a model that ignores
the target date scores) and the tiny VAE's own reconstructions of the targets (the ceiling of
any generator over it), with paired 95% intervals over sequences (trained minus baseline).

Usage: uv run python benchmarks/temporal_prediction.py [--steps 600] [--vae-steps 150]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from brief_fit import add_fit_arguments
from provenance import add_results_argument, write_result
from torch import Tensor
from torch.utils.data import DataLoader

from torchgeo_earthsynth.datamodules import EarthSynthMiniTemporalDataModule
from torchgeo_earthsynth.datasets import EarthSynthMiniTemporal
from torchgeo_earthsynth.evaluation import interval95
from torchgeo_earthsynth.lightning_modules import TemporalControlNetTask
from torchgeo_earthsynth.metrics import psnr, ssim


def scores(images: Tensor, target: Tensor) -> dict[str, list[float]]:
    """Per-sequence PSNR (dB) and SSIM on BT.601 Y."""
    return {
        'psnr': psnr(images, target, y_channel=True, reduction='none').tolist(),
        'ssim': ssim(images, target, y_channel=True, reduction='none').tolist(),
    }


def predict(task: TemporalControlNetTask, batch: dict[str, Any], args: Any) -> Tensor:
    """The task's predictions of the batch's targets (seeds 0..B-1)."""
    task.eval()
    synth = task.synthesizer(args.sample_steps, args.guidance)
    return task.generate_rows(synth, batch, len(batch['prompt']), range(len(batch['prompt'])))


def through_vae(task: TemporalControlNetTask, images: Tensor) -> Tensor:
    """The task's VAE reconstructions of ``images`` (0..255)."""
    with torch.no_grad():
        latents = task.vae.encode(images / 127.5 - 1).latent_dist.mean
        return ((task.vae.decode(latents).sample + 1) * 127.5).clamp(0, 255)


def summary_line(name: str, values: dict[str, list[float]]) -> str:
    psnr_mean, low, high = interval95(values['psnr'])
    ssim_mean = sum(values['ssim']) / len(values['ssim'])
    return f'{name}: PSNR-Y {psnr_mean:.2f} dB [{low:.2f}, {high:.2f}], SSIM-Y {ssim_mean:.3f}'


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_fit_arguments(parser)
    parser.add_argument('--frames', type=int, default=3, help='earlier frames per sequence')
    parser.set_defaults(guidance=1.0)
    add_results_argument(parser)
    args = parser.parse_args(argv)

    root = args.root or Path(tempfile.mkdtemp())
    corpus = {'frames': args.frames, 'seed': 0, 'num_train': args.num_train}
    held_out = EarthSynthMiniTemporal(root, 'val', size=args.size, num_val=args.num_eval, **corpus)
    batch = next(iter(DataLoader(held_out, batch_size=len(held_out))))
    target = batch['image'].float()
    results = {
        'copy the last frame': scores(batch['frames'][:, :, -1].float(), target),
    }

    pl.seed_everything(0)
    task = TemporalControlNetTask(
        image_size=args.size,
        lr=args.lr,
        lr_warmup_steps=20,
        vae_warmup_steps=args.vae_steps,
        ema_decay=None,
        val_num_samples=0,
    )
    results['untrained'] = scores(predict(task, batch, args), target)
    datamodule = EarthSynthMiniTemporalDataModule(
        batch_size=args.batch_size,
        root=root,
        tile_size=args.size,
        num_val=args.num_eval,
        **corpus,
    )
    trainer = pl.Trainer(
        accelerator='cpu',
        max_steps=args.vae_steps + args.steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    task.train()  # prompt and metadata dropout on (Lightning keeps the module's mode)
    start = time.perf_counter()
    trainer.fit(task, datamodule)
    seconds = time.perf_counter() - start
    results['trained'] = scores(predict(task, batch, args), target)
    results['VAE reconstruction (ceiling)'] = scores(through_vae(task, target), target)
    print(f'trained {args.vae_steps} + {args.steps} steps in {seconds:.0f} s')
    for name, values in results.items():
        print(summary_line(name, values))
    gain = [
        t - c for t, c in zip(results['trained']['psnr'], results['copy the last frame']['psnr'])
    ]
    diff, low, high = interval95(gain)
    print(f'trained - copy the last frame: PSNR-Y {diff:+.2f} dB [{low:+.2f}, {high:+.2f}]')
    summary = {
        'size': args.size,
        'frames': args.frames,
        'steps': args.steps,
        'vae_steps': args.vae_steps,
        'sequences': len(held_out),
        'train_seconds': round(seconds, 1),
        'psnr_y': {name: list(interval95(v['psnr'])) for name, v in results.items()},
        'ssim_y': {name: sum(v['ssim']) / len(v['ssim']) for name, v in results.items()},
        'trained_minus_copy_psnr_y': [diff, low, high],
    }
    write_result('temporal_prediction', summary, args.results, argv)
    return summary


if __name__ == '__main__':
    main()
