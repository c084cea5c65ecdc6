# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

r"""The GPU check: SD 1.5-shaped training and synthesis at 512 px in bf16, ours vs diffusers.

Runs on a single-GPU machine that has torch and lightning but not diffusers, torchgeo, kornia
or open_clip, and no hub access: it installs the package and those from a wheel folder,
builds SD 1.5's architecture with random weights (``earthsynth random-base``: speed does not
depend on the weights) and measures, in interleaved rounds:

* training samples/s: ``EarthSynthControlNet`` under the Lightning Trainer (``bf16-mixed``,
  prompt cache, fused AdamW) vs a loop written as diffusers'
  ``examples/controlnet/train_controlnet.py`` does it with ``--mixed_precision bf16`` (frozen
  parts cast to bf16, VAE encode and text encoder every step, AdamW, clip 1.0);
* synthesis images/s: ``Synthesizer.generate`` vs ``StableDiffusionControlNetPipeline`` called
  as a diffusers user would (a list of prompts, a list of generators, the same UniPC
  scheduler, steps and guidance), both in bf16.

The wheel folder, made where the internet is (Linux x86-64, the GPU machine's Python)::

    uv build --wheel -o wheels/
    uv export --frozen --no-dev --no-hashes --no-emit-project \
        | grep -v -E '^(torch|nvidia-|triton|lightning|pytorch-lightning)==' > wheels/req.txt
    pip download --no-deps --only-binary=:all: -d wheels/ -r wheels/req.txt \
        --python-version 3.11 --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64

On the GPU machine (under 8 minutes on an H100/H200; the JSON holds every figure)::

    python benchmarks/gpu/paper_scale.py --wheels wheels/ --out gpu.json

``--shape tiny --device cpu`` runs the same code on the tiny models (the test suite does).
The last line is ``ratio: <the smaller of the training and synthesis ratios, ours/diffusers>``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Import names the check needs that a bare torch + lightning machine lacks.
NEEDED = ('diffusers', 'transformers', 'torchgeo', 'kornia', 'open_clip', 'torchgeo_earthsynth')


def missing_modules() -> list[str]:
    """The needed modules that are not importable here."""
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def install_from_wheels(wheels: Path | None) -> list[str]:
    """Install the package and its missing dependencies from a wheel folder (no index).

    Args:
        wheels: the folder (see the module docstring); None when nothing is missing.

    Returns:
        The modules that were missing.

    Raises:
        SystemExit: if modules are missing and no wheel folder is given, or it lacks one.
    """
    missing = missing_modules()
    if not missing:
        return []
    if wheels is None or not wheels.is_dir():
        raise SystemExit(
            f'missing {", ".join(missing)} and no wheel folder (--wheels {wheels}): build one '
            'as the docstring of benchmarks/gpu/paper_scale.py says'
        )
    project = sorted(wheels.glob('torchgeo_earthsynth-*.whl'))
    if not project:
        raise SystemExit(f'{wheels} has no torchgeo_earthsynth-*.whl (uv build --wheel -o it)')
    command = [sys.executable, '-m', 'pip', 'install', '--no-index', '--find-links', str(wheels)]
    subprocess.run([*command, str(project[-1])], check=True)
    importlib.invalidate_caches()
    still = missing_modules()
    if still:
        raise SystemExit(f'still missing after installing from {wheels}: {", ".join(still)}')
    return missing


def build_model(shape: str, size: int, workdir: Path) -> Any:
    """The EarthSynthControlNet of a shape: SD 1.5's architecture (random weights) or tiny."""
    import torch

    from torchgeo_earthsynth.lightning_modules import EarthSynthControlNet
    from torchgeo_earthsynth.models.random_base import random_base

    common = {'prompt_dropout': 0.0, 'val_num_samples': 0, 'lr': 1e-5}
    if shape == 'tiny':
        return EarthSynthControlNet(preset='tiny', image_size=size, train_unet=False, **common)
    base = random_base('sd15', workdir / 'sd15', dtype=torch.bfloat16)
    return EarthSynthControlNet(preset='pretrained', base_model=str(base), **common)


def fake_samples(count: int, size: int) -> list[dict[str, Any]]:
    """Sample dicts of the training data's form: random images, 4x4-block masks, prompts."""
    import torch

    from torchgeo_earthsynth.vocabulary import prompt_from_mask

    generator = torch.Generator().manual_seed(0)
    masks = torch.randint(0, 12, (count, 4, 4), generator=generator)
    masks = masks.repeat_interleave(size // 4, -1).repeat_interleave(size // 4, -2)
    images = torch.rand(count, 3, size, size, generator=generator) * 255
    return [
        {'image': image, 'mask': mask, 'prompt': prompt_from_mask(mask)}
        for image, mask in zip(images, masks)
    ]


def train_ours(model: Any, samples: list[dict[str, Any]], args: argparse.Namespace) -> float:
    """Seconds per timed step of our module under the Lightning Trainer."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    class Timer(pl.Callback):
        def on_train_batch_start(self, trainer: pl.Trainer, *_: Any) -> None:
            if trainer.global_step == args.warmup:
                self.start = time.perf_counter()

        def on_train_end(self, trainer: pl.Trainer, *_: Any) -> None:
            self.elapsed = time.perf_counter() - self.start

    timer = Timer()
    trainer = pl.Trainer(
        accelerator='gpu' if args.device == 'cuda' else 'cpu',
        devices=1,
        precision='bf16-mixed',
        max_steps=args.train_steps + args.warmup,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        gradient_clip_val=1.0,
        callbacks=[timer],
    )
    loader = DataLoader(samples, batch_size=args.batch_size, shuffle=True, drop_last=True)  # type: ignore[arg-type]
    trainer.fit(model, loader)
    return float(timer.elapsed / args.train_steps)


def train_diffusers(model: Any, samples: list[dict[str, Any]], args: argparse.Namespace) -> float:
    """Seconds per timed step of train_controlnet.py's loop (``--mixed_precision bf16``)."""
    import torch
    import torch.nn.functional as F

    from torchgeo_earthsynth.synthesis import encode_condition

    device, weight_dtype = torch.device(args.device), torch.bfloat16
    vae = model.vae.to(device, weight_dtype)
    unet = model.unet.to(device, weight_dtype)
    text_encoder = model.text_encoder.to(device, weight_dtype)
    controlnet = model.controlnet.to(device, torch.float32).train()
    tokenizer, scheduler = model.tokenizer, model.noise_scheduler
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=1e-5, weight_decay=1e-2)
    steps = args.train_steps + args.warmup
    start = 0.0
    for step in range(steps):
        if step == args.warmup:
            _sync(args.device)
            start = time.perf_counter()
        batch = [
            samples[(step * args.batch_size + i) % len(samples)] for i in range(args.batch_size)
        ]
        pixels = torch.stack([s['image'] for s in batch]).to(device) / 127.5 - 1
        condition = encode_condition(torch.stack([s['mask'] for s in batch])).to(device)
        ids = tokenizer(
            [s['prompt'] for s in batch],
            max_length=tokenizer.model_max_length,
            padding='max_length',
            truncation=True,
            return_tensors='pt',
        ).input_ids.to(device)
        with torch.autocast(device.type, torch.bfloat16):
            latents = vae.encode(pixels.to(weight_dtype)).latent_dist.sample()
            latents = latents * vae.config.scaling_factor
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, 1000, (len(latents),), device=device)
            noisy = scheduler.add_noise(latents, noise, timesteps)
            text = text_encoder(ids, return_dict=False)[0]
            down, mid = controlnet(
                noisy,
                timesteps,
                encoder_hidden_states=text,
                controlnet_cond=condition.to(weight_dtype),
                return_dict=False,
            )
            pred = unet(
                noisy,
                timesteps,
                encoder_hidden_states=text,
                down_block_additional_residuals=[r.to(weight_dtype) for r in down],
                mid_block_additional_residual=mid.to(weight_dtype),
                return_dict=False,
            )[0]
        loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(controlnet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
    _sync(args.device)
    return (time.perf_counter() - start) / args.train_steps


def _sync(device: str) -> None:
    import torch

    if device == 'cuda':
        torch.cuda.synchronize()


def synthesis_runs(model: Any, args: argparse.Namespace) -> dict[str, Callable[[], None]]:
    """Our Synthesizer and diffusers' batched pipeline over the same modules and requests."""
    import torch

    from torchgeo_earthsynth.synthesis import Synthesizer, build_pipeline, encode_condition

    dtype = torch.bfloat16
    parts = model.parts
    for module in (parts.unet, parts.vae, parts.text_encoder, model.controlnet):
        module.to(args.device, dtype).eval()
    synth = Synthesizer(
        build_pipeline(parts, model.controlnet),
        scheduler='unipc',
        num_inference_steps=args.steps,
        guidance_scale=7.5,
        batch_size=args.batch_size,
        device=args.device,
        dtype=dtype,
    )
    anchor = build_pipeline(parts, model.controlnet)
    anchor.scheduler = type(synth.pipeline.scheduler).from_config(synth.pipeline.scheduler.config)
    anchor.set_progress_bar_config(disable=True)
    samples = fake_samples(args.num_images, args.size)
    masks = torch.stack([s['mask'] for s in samples])
    prompts = [s['prompt'] for s in samples]
    seeds = list(range(args.num_images))

    def ours() -> None:
        synth.prompts.clear()  # no cache carried over from an earlier round
        synth.generate(masks, prompts, seeds)

    def diffusers_batched() -> None:
        for first in range(0, args.num_images, args.batch_size):
            rows = slice(first, first + args.batch_size)
            condition = encode_condition(masks[rows], (args.size, args.size))
            anchor(
                prompts[rows],
                image=condition.to(args.device, dtype),
                height=args.size,
                width=args.size,
                num_inference_steps=args.steps,
                guidance_scale=7.5,
                negative_prompt=[''] * len(prompts[rows]),
                generator=[torch.Generator().manual_seed(s) for s in seeds[rows]],
                output_type='pt',
            )

    return {'ours': ours, 'diffusers': diffusers_batched}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Install what is missing, build the model, measure, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--wheels', type=Path, help='wheel folder (see the docstring)')
    parser.add_argument('--shape', choices=('sd15', 'tiny'), default='sd15')
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--size', type=int, default=512)
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--train-steps', type=int, default=20, help='timed steps a round')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--steps', type=int, default=20, help='sampler steps')
    parser.add_argument('--num-images', type=int, default=16)
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--out', type=Path, default=Path('paper_scale_gpu.json'))
    args = parser.parse_args(argv)
    installed = install_from_wheels(args.wheels)
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    result: dict[str, Any] = {'args': {k: str(v) for k, v in vars(args).items()}}
    result['installed_from_wheels'] = installed
    result['device_name'] = (
        torch.cuda.get_device_name()
        if args.device == 'cuda'
        else f'cpu ({torch.get_num_threads()} threads)'
    )
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        model = build_model(args.shape, args.size, Path(workdir))
        samples = fake_samples(args.batch_size * 4, args.size)
        result['build_s'] = time.perf_counter() - began
        train: dict[str, list[float]] = {'ours': [], 'diffusers': []}
        for _ in range(args.rounds):
            train['ours'].append(train_ours(model, samples, args))
            train['diffusers'].append(train_diffusers(model, samples, args))
        runs = synthesis_runs(model, args)
        synthesis: dict[str, list[float]] = {name: [] for name in runs}
        with torch.inference_mode():
            for run in runs.values():
                run()  # warm-up
            for _ in range(args.rounds):
                for name, run in runs.items():
                    _sync(args.device)
                    start = time.perf_counter()
                    run()
                    _sync(args.device)
                    synthesis[name].append(time.perf_counter() - start)
    rates = {name: args.batch_size / min(times) for name, times in train.items()}
    images = {name: args.num_images / min(times) for name, times in synthesis.items()}
    result['train_samples_per_s'] = rates
    result['synthesis_images_per_s'] = images
    result['train_ratio'] = rates['ours'] / rates['diffusers']
    result['synthesis_ratio'] = images['ours'] / images['diffusers']
    result['ratio'] = min(result['train_ratio'], result['synthesis_ratio'])
    result['total_s'] = time.perf_counter() - began
    if args.device == 'cuda':
        result['peak_gpu_gib'] = torch.cuda.max_memory_allocated() / 2**30
    args.out.write_text(json.dumps(result, indent=2) + '\n')
    print(f'{result["device_name"]}: {args.shape}, {args.size} px, bf16, batch {args.batch_size}')
    print(f'training samples/s: ours {rates["ours"]:.2f}, diffusers {rates["diffusers"]:.2f}')
    print(f'synthesis images/s: ours {images["ours"]:.2f}, diffusers {images["diffusers"]:.2f}')
    print(f'train ratio: {result["train_ratio"]:.3f}')
    print(f'synthesis ratio: {result["synthesis_ratio"]:.3f}')
    print(f'ratio: {result["ratio"]:.3f}')
    return result


if __name__ == '__main__':
    main()
