# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Training samples/s: EarthSynthControlNet under the Lightning Trainer vs a diffusers-style loop.

The plain loop follows diffusers' ``examples/controlnet/train_controlnet.py`` with its
defaults: captions are tokenized in the dataset, the text encoder runs every step, VAE
latents are sampled and scaled, the ControlNet residuals feed the frozen UNet, MSE on the
noise, then gradient clipping at 1.0, AdamW, a constant learning-rate schedule, grads zeroed
in place, and a tqdm bar showing loss and learning rate. Our side runs the same under the
Trainer (``gradient_clip_val=1.0``, Lightning's progress bar). Both use the same tiny models
(ControlNet trained, UNet frozen, as in the script), data, batch, optimizer and steps. Each
run is a fresh subprocess (so peak memory is its own), and the three variants are
interleaved over several rounds.

    uv run python benchmarks/train_step.py [--steps 30] [--batch-size 16] [--size 32] [--rounds 3]

32 px is the size the tiny preset trains at (``configs/mini.yaml``).
It prints ``ratio: <ours with prompt cache / plain loop>``.

``--shape sd15`` measures the real shape instead: an SD 1.5-shaped base with random weights
(:func:`~torchgeo_earthsynth.models.random_base.random_base`, written to ``--base`` unless
that folder already holds one), the ``pretrained`` preset in float32 at 256 px, ControlNet
trained and UNet frozen, no gradient checkpointing, a mini corpus of ``--num-train`` images
without flips. There ``ours-nocache`` is our step with the prompt cache and ``ours-cache``
adds the latent cache (:class:`~torchgeo_earthsynth.lightning_modules.latent_cache.LatentCache`);
the warm-up steps cover one epoch, so the timed steps are the steady state where every
image repeats and hits. A sample that misses (one CF-Comp composed, or flipped) costs what
it costs in ``ours-nocache`` plus a hash of its bytes: the ``composed`` line reports that
ratio. It prints ``ratio: <ours with prompt and latent cache / plain loop>``.
Measured on 2 shared CPU cores (float32, batch 2, 4 images, 2 warm-up and 4 timed steps, one
interleaved round): plain 0.0275 samples/s, ours-nocache 0.0333 (1.21x: fused AdamW and the
prompt cache; also what a composed, cache-missing sample runs at), ours-cache 0.0394 (1.43x,
8 hits, 4 misses in warm-up); peak RSS 12.2 / 12.0 / 11.9 GB.

    uv run python benchmarks/train_step.py --shape sd15 --base bases/sd15-random \
        --batch-size 2 --steps 4 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from provenance import add_results_argument, write_result

VARIANTS = ('plain', 'ours-nocache', 'ours-cache')
LATENT_CACHE = 4096  # images (32 KiB each at 256 px)


def build_model(variant: str, shape: str, size: int, base: str | None) -> Any:
    """The module a variant trains: tiny, or the ``pretrained`` preset on an SD 1.5 base."""
    from torchgeo_earthsynth.lightning_modules import EarthSynthControlNet

    common: dict[str, Any] = {'train_unet': False, 'prompt_dropout': 0.0, 'val_num_samples': 0}
    if shape == 'tiny':  # ours-cache: the prompt cache
        return EarthSynthControlNet(
            image_size=size, prompt_cache=variant == 'ours-cache', lr=1e-4, **common
        )
    from torchgeo_earthsynth.models.random_base import random_base

    assert base is not None
    folder = Path(base)
    if not (folder / 'model_index.json').exists():
        random_base('sd15', folder)
    return EarthSynthControlNet(
        preset='pretrained',
        base_model=str(folder),
        image_size=size,
        gradient_checkpointing=False,
        prompt_cache=True,
        latent_cache=LATENT_CACHE if variant == 'ours-cache' else 0,
        lr=1e-4,
        **common,
    ).float()


def run_variant(
    variant: str,
    steps: int,
    batch_size: int,
    size: int,
    shape: str = 'tiny',
    base: str | None = None,
    num_train: int = 64,
) -> dict[str, float]:
    import lightning.pytorch as pl
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, Dataset
    from tqdm import tqdm

    from torchgeo_earthsynth.datasets import EarthSynthMini
    from torchgeo_earthsynth.synthesis import encode_condition

    torch.manual_seed(0)
    corpus = EarthSynthMini(size=size, num_train=num_train, num_val=8)
    samples = [corpus[i] for i in range(len(corpus))]
    model = build_model(variant, shape, size, base)
    # sd15: one epoch, so the latent cache holds every image before the timing starts
    warmup = 3 if shape == 'tiny' else max(1, len(samples) // batch_size)

    if variant == 'plain':
        tokenizer, text_encoder = model.tokenizer, model.text_encoder
        vae, unet, controlnet = model.vae, model.unet, model.controlnet
        scheduler = model.noise_scheduler

        class Plain(Dataset[dict[str, Any]]):
            def __len__(self) -> int:
                return len(samples)

            def __getitem__(self, i: int) -> dict[str, Any]:
                s = samples[i]
                ids = tokenizer(
                    s['prompt'],
                    max_length=tokenizer.model_max_length,
                    padding='max_length',
                    truncation=True,
                    return_tensors='pt',
                )
                return {
                    'pixel_values': s['image'] / 127.5 - 1,
                    'conditioning_pixel_values': encode_condition(s['mask'][None])[0],
                    'input_ids': ids.input_ids[0],
                }

        loader = DataLoader(Plain(), batch_size=batch_size, shuffle=True, drop_last=True)
        optimizer = torch.optim.AdamW(controlnet.parameters(), lr=1e-4, weight_decay=1e-2)
        lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        progress_bar = tqdm(total=steps + warmup, desc='Steps')
        controlnet.train()
        done, start = 0, 0.0
        while done < steps + warmup:
            for batch in loader:
                if done == warmup:
                    start = time.perf_counter()
                with torch.no_grad():
                    latents = vae.encode(batch['pixel_values']).latent_dist.sample()
                latents = latents * vae.config.scaling_factor
                noise = torch.randn_like(latents)
                timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(latents),))
                noisy = scheduler.add_noise(latents, noise, timesteps)
                text = text_encoder(batch['input_ids'], return_dict=False)[0]
                down, mid = controlnet(
                    noisy,
                    timesteps,
                    encoder_hidden_states=text,
                    controlnet_cond=batch['conditioning_pixel_values'],
                    return_dict=False,
                )
                pred = unet(
                    noisy,
                    timesteps,
                    encoder_hidden_states=text,
                    down_block_additional_residuals=down,
                    mid_block_additional_residual=mid,
                    return_dict=False,
                )[0]
                loss = F.mse_loss(pred.float(), noise.float(), reduction='mean')
                loss.backward()
                torch.nn.utils.clip_grad_norm_(controlnet.parameters(), 1.0)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=False)  # the script's default
                progress_bar.update(1)
                progress_bar.set_postfix(
                    loss=loss.detach().item(), lr=lr_scheduler.get_last_lr()[0]
                )
                done += 1
                if done == steps + warmup:
                    break
        elapsed = time.perf_counter() - start
    else:

        class Timer(pl.Callback):
            def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
                if trainer.global_step == warmup:
                    self.start = time.perf_counter()

            def on_train_end(self, trainer: pl.Trainer, *args: Any) -> None:
                self.elapsed = time.perf_counter() - self.start

        timer = Timer()
        loader = DataLoader(samples, batch_size=batch_size, shuffle=True, drop_last=True)  # type: ignore[arg-type]
        trainer = pl.Trainer(
            accelerator='cpu',
            max_steps=steps + warmup,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            limit_val_batches=0,
            gradient_clip_val=1.0,
            callbacks=[timer],
        )
        trainer.fit(model, loader)
        elapsed = timer.elapsed
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {'samples_per_s': steps * batch_size / elapsed, 'peak_rss_mb': peak_mb}
    cache = getattr(model, 'latent_cache', None)
    if cache is not None:
        result |= {'cache_hits': cache.hits, 'cache_misses': cache.misses}
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=30)
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--size', type=int, default=32)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--shape', choices=('tiny', 'sd15'), default='tiny')
    parser.add_argument('--base', help='sd15: folder of the random SD 1.5 base (written if absent)')
    parser.add_argument('--num-train', type=int, help='corpus size (default: 64 tiny, 8 sd15)')
    parser.add_argument('--variant', choices=VARIANTS, help=argparse.SUPPRESS)
    add_results_argument(parser)
    args = parser.parse_args(argv)
    if args.shape == 'sd15':
        args.size = 256 if args.size == 32 else args.size
        args.base = args.base or str(Path(tempfile.gettempdir()) / 'earthsynth-sd15-random')
    num_train = args.num_train or (64 if args.shape == 'tiny' else 8)
    if args.variant:  # child process
        result = run_variant(
            args.variant, args.steps, args.batch_size, args.size, args.shape, args.base, num_train
        )
        print(json.dumps(result))
        return result
    extra = ['--shape', args.shape, '--num-train', str(num_train)]
    extra += ['--base', args.base] if args.base else []
    results: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for round_ in range(args.rounds):
        for variant in VARIANTS:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    '--variant',
                    variant,
                    '--steps',
                    str(args.steps),
                    '--batch-size',
                    str(args.batch_size),
                    '--size',
                    str(args.size),
                    *extra,
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            results[variant].append(json.loads(out.strip().splitlines()[-1]))
            print(f'round {round_}: {variant:13s} {results[variant][-1]}', flush=True)
    rate = {v: statistics.median(r['samples_per_s'] for r in results[v]) for v in VARIANTS}
    peak = {v: max(r['peak_rss_mb'] for r in results[v]) for v in VARIANTS}
    for v in VARIANTS:
        print(f'{v:13s} {rate[v]:8.2f} samples/s   peak RSS {peak[v]:7.0f} MB')
    print(f'ratio (cache off): {rate["ours-nocache"] / rate["plain"]:.3f}')
    if args.shape == 'sd15':
        print(f'composed (cache-missing) samples: ratio {rate["ours-nocache"] / rate["plain"]:.3f}')
    print(f'ratio: {rate["ours-cache"] / rate["plain"]:.3f}')
    summary = {
        'shape': args.shape,
        'steps': args.steps,
        'batch_size': args.batch_size,
        'size': args.size,
        'rounds': args.rounds,
        'num_train': num_train,
        'samples_per_s': rate,
        'peak_rss_mb': peak,
        'ratio_cache_off': round(rate['ours-nocache'] / rate['plain'], 4),
        'ratio': round(rate['ours-cache'] / rate['plain'], 4),
    }
    write_result('train_step', summary, args.results, argv)
    return summary


if __name__ == '__main__':
    main()
