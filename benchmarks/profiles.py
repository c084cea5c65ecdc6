# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Where the time goes: the profiles behind the README's notes on the benchmark goals.

    uv run python benchmarks/profiles.py train       # parts of a plain training step; ours vs plain
    uv run python benchmarks/profiles.py synthesis   # UNet/ControlNet share of batched synthesis
    uv run python benchmarks/profiles.py rfilter     # segmenter chunks, std vs centred norm

Each part is timed with ``time.perf_counter`` around the call, median over repeats, in one
process on the tiny models. These are profiles, not the goals' ratios (see the other scripts).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from provenance import add_results_argument, write_result
from torch import nn


def _median_ms(run: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def profile_train(size: int, batch_size: int, steps: int) -> dict[str, Any]:
    """Parts of a diffusers-style step, and our module's loss step against it."""
    from torchgeo_earthsynth.datasets import EarthSynthMini
    from torchgeo_earthsynth.lightning_modules import EarthSynthControlNet
    from torchgeo_earthsynth.synthesis import encode_condition

    torch.manual_seed(0)
    corpus = EarthSynthMini(size=size, num_train=batch_size, num_val=1)
    samples = [corpus[i] for i in range(batch_size)]
    model = EarthSynthControlNet(
        image_size=size, train_unet=False, prompt_dropout=0.0, val_num_samples=0, prompt_cache=False
    ).train()
    tok, text_encoder, vae = model.tokenizer, model.text_encoder, model.vae
    unet, controlnet, scheduler = model.unet, model.controlnet, model.noise_scheduler
    batch = {key: [s[key] for s in samples] for key in ('prompt',)}
    batch['image'] = torch.stack([s['image'] for s in samples])
    batch['mask'] = torch.stack([s['mask'] for s in samples])
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=1e-4, fused=True)
    parts: dict[str, list[float]] = defaultdict(list)

    def timed(name: str, run: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        out = run()
        parts[name].append((time.perf_counter() - start) * 1000)
        return out

    def plain_step() -> torch.Tensor:
        ids = timed(
            'tokenize',
            lambda: torch.stack(
                [
                    tok(
                        p, max_length=77, padding='max_length', truncation=True, return_tensors='pt'
                    ).input_ids[0]
                    for p in batch['prompt']
                ]
            ),
        )
        images, cond = batch['image'] / 127.5 - 1, encode_condition(batch['mask'])
        with torch.no_grad():
            latents = timed('VAE encode', lambda: vae.encode(images).latent_dist.sample())
            text = timed('text encoder', lambda: text_encoder(ids, return_dict=False)[0])
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, 1000, (len(latents),))
        noisy = scheduler.add_noise(latents, noise, timesteps)
        down, mid = timed(
            'ControlNet forward',
            lambda: controlnet(
                noisy,
                timesteps,
                encoder_hidden_states=text,
                controlnet_cond=cond,
                return_dict=False,
            ),
        )
        pred = timed(
            'UNet forward',
            lambda: unet(
                noisy,
                timesteps,
                encoder_hidden_states=text,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
                return_dict=False,
            )[0],
        )
        return F.mse_loss(pred.float(), noise.float())

    def train(step: Callable[[], torch.Tensor], record: bool) -> None:
        loss = step()
        if record:
            timed('backward', loss.backward)
            timed('AdamW (fused)', optimizer.step)
        else:
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for i in range(steps + 2):
        start = time.perf_counter()
        train(plain_step, record=True)
        if i >= 2:
            parts['step'].append((time.perf_counter() - start) * 1000)
    step_ms = statistics.median(parts.pop('step'))
    print(f'plain step at {size} px, batch {batch_size}: {step_ms:.1f} ms (median of {steps})')
    parts_ms = {}
    for name, values in parts.items():
        ms = parts_ms[name] = statistics.median(values[2:])
        print(f'  {name:20s} {ms:6.1f} ms  {100 * ms / step_ms:5.1f} %')
    plain = _median_ms(lambda: train(plain_step, record=False), steps)
    ours = _median_ms(lambda: train(lambda: model.diffusion_loss(batch), record=False), steps)
    print(f'one process, no Trainer: plain step {plain:.1f} ms, our step {ours:.1f} ms')
    params = list(controlnet.parameters())
    for param in params:
        param.grad = torch.randn_like(param)
    adamw_ms = {}
    for name, kwargs in (('foreach', {'foreach': True}), ('fused', {'fused': True})):
        adamw = torch.optim.AdamW(params, lr=1e-4, **kwargs)
        adamw_ms[name] = _median_ms(adamw.step, steps)
        print(f'AdamW step over the ControlNet, {name}: {adamw_ms[name]:.2f} ms')
    return {
        'size': size,
        'batch_size': batch_size,
        'plain_step_ms': step_ms,
        'parts_ms': parts_ms,
        'no_trainer_ms': {'plain': plain, 'ours': ours},
        'adamw_ms': adamw_ms,
    }


def profile_synthesis(size: int, repeats: int) -> dict[str, Any]:
    """Share of the UNet and ControlNet in batched synthesis (forward hooks around them)."""
    from torchgeo_earthsynth.synthesis import Synthesizer
    from torchgeo_earthsynth.vocabulary import prompt_from_mask

    synth = Synthesizer.tiny(
        image_size=size, num_inference_steps=20, batch_size=8, guidance_scale=3.0
    )
    generator = torch.Generator().manual_seed(0)
    masks = torch.randint(0, 12, (16, size // 8, size // 8), generator=generator)
    masks = masks.repeat_interleave(8, -1).repeat_interleave(8, -2)
    prompts = [prompt_from_mask(m) for m in masks]
    spent: dict[str, float] = defaultdict(float)

    def hook(module: nn.Module, name: str) -> None:
        starts: list[float] = []

        def before(*_: Any) -> None:
            starts.append(time.perf_counter())

        def after(*_: Any) -> None:
            spent[name] += time.perf_counter() - starts.pop()

        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)

    hook(synth.pipeline.unet, 'UNet')
    hook(synth.pipeline.controlnet, 'ControlNet')
    with torch.inference_mode():
        synth.generate(masks, prompts)  # warm-up
        totals, shares = [], defaultdict(list)
        for _ in range(repeats):
            spent.clear()
            start = time.perf_counter()
            synth.generate(masks, prompts)
            totals.append(time.perf_counter() - start)
            for name in ('UNet', 'ControlNet'):
                shares[name].append(spent[name])
    total = statistics.median(totals)
    print(f'batched synthesis, {size} px, 16 images, batch 8, 20 UniPC steps: {total:.2f} s')
    seconds_in = {}
    for name, values in shares.items():
        seconds = seconds_in[name] = statistics.median(values)
        print(f'  {name:10s} {seconds:5.2f} s  {100 * seconds / total:5.1f} %')
    return {'size': size, 'total_s': total, 'seconds_in': seconds_in}


def profile_rfilter(size: int, repeats: int) -> dict[str, Any]:
    """The benchmark's conv segmenter on a batch of 32, whole vs in chunks; std vs a norm."""
    torch.manual_seed(0)
    segmenter = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 12, 1))
    x = torch.rand(32, 3, size, size)
    with torch.inference_mode():
        whole = _median_ms(lambda: segmenter(x), repeats)
        chunked = _median_ms(lambda: [segmenter(c) for c in x.split(8)], repeats)
        flat = x.flatten(1) * 255
        std = _median_ms(lambda: flat.std(1, correction=0), repeats)
        norm = _median_ms(
            lambda: torch.linalg.vector_norm(flat - flat.mean(1, keepdim=True), dim=1), repeats
        )
    print(
        f'conv segmenter, 32 images at {size} px: whole batch {whole:.2f} ms, '
        f'chunks of 8 {chunked:.2f} ms ({whole / chunked:.1f}x)'
    )
    print(
        f'per-image spread of 32 images: Tensor.std {std:.3f} ms, centred norm {norm:.3f} ms '
        f'({std / norm:.1f}x)'
    )

    return {
        'size': size,
        'segmenter_ms': {'whole': whole, 'chunks_of_8': chunked},
        'spread_ms': {'std': std, 'centred_norm': norm},
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('what', choices=('train', 'synthesis', 'rfilter'))
    parser.add_argument('--size', type=int, help='image size (train 32, synthesis/rfilter 64)')
    parser.add_argument('--repeats', type=int, default=20)
    add_results_argument(parser)
    args = parser.parse_args(argv)
    match args.what:
        case 'train':
            result = profile_train(args.size or 32, 16, args.repeats)
        case 'synthesis':
            result = profile_synthesis(args.size or 64, max(1, args.repeats // 10))
        case 'rfilter':
            result = profile_rfilter(args.size or 64, args.repeats * 5)
    # one file for each profile, so that the three do not overwrite each other
    write_result(f'profiles_{args.what}', result, args.results, argv, script='profiles')
    return result


if __name__ == '__main__':
    main()
