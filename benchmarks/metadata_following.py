# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Does a trained text + metadata model follow the month as the mini corpus does?

Trains the tiny DiffusionSat model (``DiffusionSatTask``, tiny preset) briefly on the mini
corpus, then generates each held-out (val) scene's prompt with its own metadata set to its
hemisphere's midsummer and midwinter month (same seeds), and prints the green chromaticity
``G / (R + G + B)`` of the generated images, summer minus winter, for the untrained and the
trained model, next to the same difference in the corpus itself (real images of scenes with
greenness > 0.75 minus < 0.25).

Usage: uv run python benchmarks/metadata_following.py [--steps 600] [--vae-steps 150]
The last line is ``ratio: <trained summer-winter difference / untrained one>``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import lightning.pytorch as pl
import torch
from brief_fit import add_fit_arguments, fit_on_mini
from torch import Tensor

from torchgeo_earthsynth.conditions import METADATA_FIELDS
from torchgeo_earthsynth.datasets import EarthSynthMini
from torchgeo_earthsynth.datasets.mini import green_chroma, greenness, seasonal_extremes
from torchgeo_earthsynth.lightning_modules import DiffusionSatTask

MONTH, LAT = METADATA_FIELDS.index('month'), METADATA_FIELDS.index('lat')


def season_effect(
    task: DiffusionSatTask, prompts: list[str], metadata: Tensor, steps: int, guidance: float
) -> float:
    """Mean green chroma of images generated for midsummer minus for midwinter."""
    summer, winter = seasonal_extremes(metadata)
    synth = task.synthesizer(steps, guidance)
    seeds = list(range(len(prompts)))
    with task.ema_weights():
        hot = synth.generate(None, prompts, seeds=seeds, metadata=summer)
        cold = synth.generate(None, prompts, seeds=seeds, metadata=winter)
    return float((green_chroma(hot) - green_chroma(cold)).mean())


def corpus_effect(dataset: EarthSynthMini) -> float:
    """Mean green chroma of real scenes near midsummer minus near midwinter."""
    hot, cold = [], []
    for i in range(len(dataset)):
        sample = dataset[i]
        metadata = sample['metadata']
        green = greenness(float(metadata[MONTH]), float(metadata[LAT]))
        chroma = float(green_chroma(sample['image'][None].float()))
        if green > 0.75:
            hot.append(chroma)
        elif green < 0.25:
            cold.append(chroma)
    return sum(hot) / len(hot) - sum(cold) / len(cold)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_fit_arguments(parser)
    parser.add_argument('--tile-size', type=int, default=32, help='corpus tile px')
    parser.add_argument('--metadata-dropout', type=float, default=0.1)
    args = parser.parse_args()

    root = args.root or Path(tempfile.mkdtemp())
    corpus = {
        'seed': 0,
        'size': args.tile_size,
        'num_train': args.num_train,
        'num_val': args.num_eval,
    }
    val = EarthSynthMini(root, split='val', **corpus)
    held_out = [val[i] for i in range(len(val))]
    prompts = [s['prompt'] for s in held_out]
    metadata = torch.stack([s['metadata'] for s in held_out])
    train = EarthSynthMini(root, **corpus)
    print(f'corpus: summer - winter green chroma {corpus_effect(train):+.4f} (real images)')

    pl.seed_everything(0)
    task = DiffusionSatTask(
        image_size=args.size,
        lr=args.lr,
        lr_warmup_steps=20,
        vae_warmup_steps=args.vae_steps,
        metadata_dropout=args.metadata_dropout,
        ema_decay=None,
        val_num_samples=0,
    )
    task.eval()
    untrained = season_effect(task, prompts, metadata, args.sample_steps, args.guidance)
    print(f'untrained: summer - winter green chroma {untrained:+.4f}')

    seconds = fit_on_mini(task, args, root, args.tile_size)
    print(f'trained {args.vae_steps} + {args.steps} steps in {seconds:.0f} s')
    task.eval()
    trained = season_effect(task, prompts, metadata, args.sample_steps, args.guidance)
    print(f'trained: summer - winter green chroma {trained:+.4f}')
    print(f'ratio: {trained / max(abs(untrained), 1e-4):.2f}')


if __name__ == '__main__':
    main()
