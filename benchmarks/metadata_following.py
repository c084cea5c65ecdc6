# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Does a trained text + metadata model follow the month as the mini corpus does?

Trains the tiny DiffusionSat model (``DiffusionSatTask``, tiny preset) briefly on the mini
corpus with every scene in the northern hemisphere (``latitudes=(0, 60)``: there the month
alone sets the season; over both hemispheres its average effect is nil), then generates each
held-out (val) scene's prompt with its own metadata set to its hemisphere's midsummer and
midwinter month (same seeds), and prints the green chromaticity ``G / (R + G + B)`` of the
generated images, summer minus winter (mean and standard error over the pairs), for the
untrained and the trained model, next to the same difference in the corpus itself (real
scenes with greenness > 0.75 minus < 0.25) and in the corpus seen through the trained VAE
(each real scene encoded and decoded: the most a generator over that VAE can show).
``--latitudes -60 60`` measures the default corpus, where the model must learn the
latitude x month interaction.

Usage: uv run python benchmarks/metadata_following.py [--steps 300] [--vae-steps 600]
It prints ``ratio: <trained summer-winter difference / corpus one>``.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from brief_fit import add_fit_arguments, fit_on_mini
from provenance import add_results_argument, write_result
from torch import Tensor

from torchgeo_earthsynth.datasets import EarthSynthMini
from torchgeo_earthsynth.lightning_modules import DiffusionSatTask
from torchgeo_earthsynth.metrics import corpus_season_shift, season_shift


def shift(task: DiffusionSatTask, prompts: list[str], metadata: Tensor, args: Any) -> Tensor:
    """Summer - winter green chroma of the task's generated images, ``--seeds`` per prompt."""
    task.eval()
    synth = task.synthesizer(args.sample_steps, args.guidance)
    count = len(prompts)
    with task.ema_weights():
        shifts = [
            season_shift(synth, prompts, metadata, range(k * count, (k + 1) * count))
            for k in range(args.seeds)
        ]
    return torch.cat(shifts)


class ThroughVAE:
    """A corpus whose images are the task's VAE reconstructions at the task's size."""

    def __init__(self, dataset: EarthSynthMini, task: DiffusionSatTask, size: int) -> None:
        self.dataset, self.task, self.size = dataset, task, size

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = dict(self.dataset[index])
        image = F.interpolate(sample['image'][None].float(), self.size, mode='area') / 127.5 - 1
        with torch.no_grad():
            decoded = self.task.vae.decode(self.task.vae.encode(image).latent_dist.mean).sample
        sample['image'] = ((decoded[0] + 1) * 127.5).clamp(0, 255)
        return sample


def describe(name: str, shifts: Tensor) -> str:
    """``name: summer - winter green chroma +m (standard error s, n pairs)``."""
    error = float(shifts.std() / len(shifts) ** 0.5)
    return (
        f'{name}: summer - winter green chroma {float(shifts.mean()):+.4f} '
        f'(standard error {error:.4f}, {len(shifts)} pairs)'
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_fit_arguments(parser)
    parser.add_argument('--vae-downscale', type=int, choices=(1, 2), default=1)
    parser.set_defaults(size=16, steps=300, vae_steps=600)
    parser.add_argument('--tile-size', type=int, default=32, help='corpus tile px')
    parser.add_argument('--latitudes', type=float, nargs=2, default=(0.0, 60.0))
    parser.add_argument('--seeds', type=int, default=2, help='generated pairs per prompt')
    parser.add_argument('--metadata-dropout', type=float, default=0.1)
    add_results_argument(parser)
    args = parser.parse_args(argv)

    root = args.root or Path(tempfile.mkdtemp())
    corpus = {
        'seed': 0,
        'num_train': args.num_train,
        'num_val': args.num_eval,
        'latitudes': tuple(args.latitudes),
    }
    val = EarthSynthMini(root, split='val', size=args.tile_size, **corpus)
    held_out = [val[i] for i in range(len(val))]
    prompts = [s['prompt'] for s in held_out]
    metadata = torch.stack([s['metadata'] for s in held_out])
    train = EarthSynthMini(root, size=args.tile_size, **corpus)
    real = corpus_season_shift(train)
    print(f'corpus: summer - winter green chroma {real:+.4f} (real training images)')

    pl.seed_everything(0)
    task = DiffusionSatTask(
        image_size=args.size,
        lr=args.lr,
        lr_warmup_steps=20,
        vae_warmup_steps=args.vae_steps,
        tiny_vae_downscale=args.vae_downscale,
        metadata_dropout=args.metadata_dropout,
        ema_decay=None,
        val_num_samples=0,
    )
    untrained = shift(task, prompts, metadata, args)
    print(describe('untrained', untrained))

    task.train()  # metadata and prompt dropout on (Lightning keeps the module's mode)
    seconds = fit_on_mini(task, args, root, args.tile_size, latitudes=corpus['latitudes'])
    print(f'trained {args.vae_steps} + {args.steps} steps in {seconds:.0f} s')
    task.eval()
    through_vae = corpus_season_shift(ThroughVAE(train, task, args.size))  # type: ignore[arg-type]
    print(f'corpus through the trained VAE: summer - winter green chroma {through_vae:+.4f}')
    trained = shift(task, prompts, metadata, args)
    print(describe('trained', trained))
    print(f'ratio: {float(trained.mean()) / real:.2f}')
    summary = {
        'size': args.size,
        'steps': args.steps,
        'vae_steps': args.vae_steps,
        'train_seconds': round(seconds, 1),
        'green_chroma_shift': {
            'real': real,
            'through_vae': through_vae,
            'untrained': float(untrained.mean()),
            'trained': float(trained.mean()),
        },
        'ratio': float(trained.mean()) / real,
    }
    write_result('metadata_following', summary, args.results, argv)
    return summary


if __name__ == '__main__':
    main()
