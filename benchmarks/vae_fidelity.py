# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""How much mask fidelity does the tiny VAE keep? The ceiling of every generated image.

Trains the tiny preset's VAE on mini-corpus training scenes as the diffusion task's warm-up does
(MSE + a small KL, AdamW, batch 16), then scores its reconstructions of the held-out scenes
with the pixel classifier of the mask-fidelity metric (mIoU against their masks). A generated
image is decoded by this VAE, so it cannot follow its mask better than a reconstruction does.

Usage:
    uv run python benchmarks/vae_fidelity.py --steps 200 --lr 1e-3   # the demo's warm-up
It prints ``ratio: <reconstruction mIoU / real mIoU>``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from provenance import add_results_argument, write_result
from tqdm.auto import trange

from torchgeo_earthsynth.datasets import EarthSynthMini
from torchgeo_earthsynth.metrics import PixelClassifier, mask_fidelity
from torchgeo_earthsynth.models.tiny import tiny_vae


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=200, help='VAE training steps')
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--kl', type=float, default=1e-3, help='KL weight (per pixel value)')
    parser.add_argument('--size', type=int, default=32, help='tile size in pixels')
    parser.add_argument('--num', type=int, default=64, help='held-out scenes scored')
    add_results_argument(parser)
    args = parser.parse_args(argv)

    train, val = EarthSynthMini(size=args.size), EarthSynthMini(size=args.size, split='val')
    images = torch.stack([train[i]['image'] for i in range(len(train))])
    masks = torch.stack([train[i]['mask'] for i in range(len(train))])
    held_images = torch.stack([val[i]['image'] for i in range(args.num)])
    held_masks = torch.stack([val[i]['mask'] for i in range(args.num)])
    segmenter = PixelClassifier().fit(images[:128], masks[:128], seed=0).eval()

    vae = tiny_vae(1, args.size)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in trange(args.steps, desc='VAE'):
        batch = images[torch.randint(0, len(images), (16,), generator=generator)] / 127.5 - 1
        posterior = vae.encode(batch).latent_dist
        recon = vae.decode(posterior.sample()).sample
        kl = posterior.kl().mean() / batch[0].numel()
        loss = F.mse_loss(recon, batch) + args.kl * kl
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        latents = vae.encode(held_images / 127.5 - 1).latent_dist.mode()
        recon = (vae.decode(latents).sample.clamp(-1, 1) + 1) * 127.5
    real = mask_fidelity(segmenter, held_images, held_masks).miou
    reconstructed = mask_fidelity(segmenter, recon, held_masks).miou
    result: dict[str, Any] = {
        'steps': args.steps,
        'lr': args.lr,
        'train_seconds': round(seconds, 1),
        'final_loss': round(float(loss), 4),
        'real_miou': round(real, 3),
        'reconstruction_miou': round(reconstructed, 3),
    }
    print(json.dumps(result))
    print(f'ratio: {reconstructed / real:.3f}')
    write_result('vae_fidelity', result, args.results, argv)
    return result


if __name__ == '__main__':
    main()
