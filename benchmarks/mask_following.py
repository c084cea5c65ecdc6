# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Does training make generated images follow their masks? Trained export vs two controls.

A per-pixel classifier fitted on real mini-corpus training images labels images generated for
the held-out (val) masks; its mIoU against the condition masks is printed for real images
(the ceiling), the untrained tiny model, the trained export given shuffled masks (each image
conditioned on another scene's mask, same prompt and seed: what prompts and class priors
alone earn) and the trained export given the right masks (same seeds, same sampler).

Usage:
    uv run earthsynth fit --config configs/mini.yaml      # writes .../export
    uv run python benchmarks/mask_following.py outputs/mini/lightning_logs/version_0/export
It prints ``ratio: <trained mIoU / untrained mIoU>``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch
from provenance import add_results_argument, write_result

from torchgeo_earthsynth.datasets import EarthSynthMini
from torchgeo_earthsynth.lightning_modules import EarthSynthControlNet, sample_grid
from torchgeo_earthsynth.metrics import PixelClassifier, mask_fidelity
from torchgeo_earthsynth.synthesis import Synthesizer


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('export', type=Path, help='diffusers export of a tiny-preset model')
    parser.add_argument('--num', type=int, default=64, help='held-out masks')
    parser.add_argument('--steps', type=int, default=20)
    parser.add_argument('--guidance', type=float, default=2.0)
    parser.add_argument('--grid', type=Path, default=None, help='also save a sample grid PNG')
    add_results_argument(parser)
    args = parser.parse_args(argv)

    meta = json.loads((args.export / 'earthsynth.json').read_text())
    size = int(meta['image_size'])
    train = EarthSynthMini(size=size)
    val = EarthSynthMini(size=size, split='val')
    held_out = [val[i] for i in range(min(args.num, len(val)))]
    masks = torch.stack([s['mask'] for s in held_out])
    real = torch.stack([s['image'] for s in held_out])
    prompts = [s['prompt'] for s in held_out]
    fit = [train[i] for i in range(min(128, len(train)))]
    segmenter = (
        PixelClassifier()
        .fit(torch.stack([s['image'] for s in fit]), torch.stack([s['mask'] for s in fit]))
        .eval()
    )

    # the untrained control has the export's architecture: its VAE's downscale, its target
    vae_blocks = json.loads((args.export / 'vae' / 'config.json').read_text())['block_out_channels']
    scheduler = json.loads((args.export / 'scheduler' / 'scheduler_config.json').read_text())
    untrained = EarthSynthControlNet(
        image_size=size,
        condition_encoding=meta['condition_encoding'],
        prediction_type=scheduler['prediction_type'],
        tiny_vae_downscale=2 ** (len(vae_blocks) - 1),
    )
    synths = {
        'untrained': untrained.synthesizer(args.steps, args.guidance),
        'trained': Synthesizer.from_pretrained(
            args.export, num_inference_steps=args.steps, guidance_scale=args.guidance
        ),
    }
    seeds = list(range(len(masks)))
    generated = {name: s.generate(masks, prompts, seeds) for name, s in synths.items()}
    shuffle = torch.randperm(len(masks), generator=torch.Generator().manual_seed(1))
    generated['shuffled'] = synths['trained'].generate(masks[shuffle], prompts, seeds)
    scores = {'real': mask_fidelity(segmenter, real, masks).miou}
    scores |= {
        name: mask_fidelity(segmenter, images, masks).miou for name, images in generated.items()
    }
    for name, miou in scores.items():
        print(f'mIoU of the pixel classifier on {name:9s} images vs held-out masks: {miou:.3f}')
    if args.grid is not None:
        fig = sample_grid(
            masks[:6],
            generated['trained'][:6],
            real[:6],
            prompts[:6],
            title=f'trained ({meta["global_step"]} steps), held-out masks',
        )
        fig.savefig(args.grid, dpi=80)
        plt.close(fig)
    print(f'shuffled-mask control ratio: {scores["trained"] / max(scores["shuffled"], 1e-6):.3f}')
    ratio = scores['trained'] / max(scores['untrained'], 1e-6)
    print(f'ratio: {ratio:.3f}')
    summary = {
        'export': str(args.export),
        'training_steps': meta['global_step'],
        'held_out_masks': len(held_out),
        'steps': args.steps,
        'guidance': args.guidance,
        'mIoU': {name: round(miou, 4) for name, miou in scores.items()},
        'ratio': round(ratio, 4),
    }
    write_result('mask_following', summary, args.results, argv)
    return summary


if __name__ == '__main__':
    main()
