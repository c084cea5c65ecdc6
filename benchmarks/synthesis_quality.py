# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Images/s and mask fidelity of faster Synthesizer settings vs diffusers' batched pipeline.

The anchor is ``StableDiffusionControlNetPipeline`` (built from the export's parts, UniPC)
called as a diffusers user would: once per batch, with a list of prompts and a list of
torch generators. Each row is timed in interleaved rounds (median) on the held-out (val)
masks of the mini corpus and scored on the same masks and seeds: the mask fidelity (mIoU of
a pixel classifier fitted on real training images, as ``benchmarks/mask_following.py``)
and the images' distance to the anchor's (mean absolute difference in 0..255, PSNR). Rows:
the Synthesizer at the anchor's settings, guidance only for the first part of the steps
(``guidance_steps``: the unconditional half of the prompt embeddings and of the ControlNet
image is dropped), fewer steps of UniPC or DPM-Solver++, and both.

    uv run python benchmarks/synthesis_quality.py outputs/demo/export [--image-size 64]
    uv run python benchmarks/synthesis_quality.py --shape sd15 [--sd15-folder DIR]

``--shape sd15`` times the same rows on an SD 1.5-shaped random-weight base with a
ControlNet made from its UNet, at 256 px (images/s only: random weights have no fidelity;
it writes the 2.1 GB base to ``--sd15-folder`` unless it is there; ~5 GB RAM in float32).
It prints ``ratio: <images/s of the fastest row whose mIoU is within 0.02 of the
anchor's / the anchor's images/s>`` (``--shape sd15``: of the fastest row).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import ControlNetModel, UniPCMultistepScheduler
from provenance import add_results_argument, write_result
from torch import Tensor

from torchgeo_earthsynth.datasets import EarthSynthMini
from torchgeo_earthsynth.metrics import PixelClassifier, mask_fidelity
from torchgeo_earthsynth.synthesis import Synthesizer, build_pipeline, encode_condition
from torchgeo_earthsynth.synthesis.guidance_cutoff import GuidanceCutoff

TOLERANCE = 0.02  # the mIoU a faster row may lose against the anchor


def load_base(args: argparse.Namespace) -> Synthesizer:
    """The Synthesizer whose modules every row shares (the export, or the SD 1.5 shape)."""
    if args.shape == 'demo':
        return Synthesizer.from_pretrained(args.export, device=args.device)
    from torchgeo_earthsynth.models import pretrained_parts
    from torchgeo_earthsynth.models.random_base import random_base

    folder = args.sd15_folder
    if not (folder / 'model_index.json').exists():
        random_base('sd15', folder)
    parts = pretrained_parts(folder)
    pipeline = build_pipeline(parts, ControlNetModel.from_unet(parts.unet))
    return Synthesizer(pipeline, condition_encoding='palette', device=args.device)


def held_out(args: argparse.Namespace) -> tuple[Tensor, list[str], PixelClassifier | None]:
    """Val masks and prompts, and the pixel classifier fitted on real training images."""
    val = EarthSynthMini(size=args.image_size, split='val')
    samples = [val[i] for i in range(min(args.num, len(val)))]
    masks = torch.stack([s['mask'] for s in samples])
    prompts = [s['prompt'] for s in samples]
    if args.shape != 'demo':
        return masks, prompts, None
    train = EarthSynthMini(size=args.image_size)
    fit = [train[i] for i in range(min(128, len(train)))]
    images = torch.stack([s['image'] for s in fit])
    segmenter = PixelClassifier().fit(images, torch.stack([s['mask'] for s in fit])).eval()
    real = torch.stack([s['image'] for s in samples])
    print(f'mIoU of the pixel classifier on real val images: {_miou(segmenter, real, masks):.3f}')
    return masks, prompts, segmenter


def _miou(segmenter: PixelClassifier, images: Tensor, masks: Tensor) -> float:
    return float(mask_fidelity(segmenter, images, masks).miou)


def rows(base: Synthesizer, args: argparse.Namespace) -> dict[str, Synthesizer]:
    """The Synthesizer rows: (scheduler, steps, guided steps) settings over shared modules."""
    full, fast = args.steps, args.fast_steps
    half, fast_half = round(full * args.guidance_fraction), round(fast * args.guidance_fraction)
    settings: dict[str, tuple[Any, int, int | None]] = {
        f'Synthesizer UniPC {full}': ('unipc', full, None),
        f'  + guidance first {half}/{full}': ('unipc', full, half),
        f'Synthesizer UniPC {fast}': ('unipc', fast, None),
        f'Synthesizer DPM++ {fast}': ('dpm', fast, None),
        f'  UniPC {fast} + guidance first {fast_half}': ('unipc', fast, fast_half),
        f'  DPM++ {fast} + guidance first {fast_half}': ('dpm', fast, fast_half),
    }
    pipe = base.pipeline
    if not GuidanceCutoff.supported(pipe):
        cut = [name for name, (_, _, guided) in settings.items() if guided is not None]
        print(f'skipped {len(cut)} guidance cut-off rows: this diffusers cannot run them')
        settings = {name: s for name, s in settings.items() if name not in cut}
    return {
        name: Synthesizer(
            build_pipeline(pipe, pipe.controlnet),  # its own scheduler, the same modules
            scheduler=scheduler,
            num_inference_steps=steps,
            guidance_scale=args.guidance_scale,
            guidance_steps=guided,
            batch_size=args.batch_size,
            condition_encoding=base.condition_encoding,
            prompt_encoder=base.prompts,
        )
        for name, (scheduler, steps, guided) in settings.items()
    }


def anchor(
    base: Synthesizer, masks: Tensor, prompts: list[str], args: argparse.Namespace
) -> Callable[[], Tensor]:
    """The anchor: diffusers' batched pipeline, given lists of prompts and generators."""
    pipe = build_pipeline(base.pipeline, base.pipeline.controlnet)
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    size = masks.shape[-2:]

    def run() -> Tensor:
        out = []
        for start in range(0, len(masks), args.batch_size):
            stop = min(start + args.batch_size, len(masks))
            cond = encode_condition(masks[start:stop], size, base.condition_encoding)
            images = pipe(
                prompt=prompts[start:stop],
                image=cond.to(base.device),
                height=size[0],
                width=size[1],
                num_inference_steps=args.steps,
                guidance_scale=args.guidance_scale,
                generator=[torch.Generator().manual_seed(s) for s in range(start, stop)],
                output_type='pt',
            ).images
            out.append(images.float().mul(255).cpu())
        return torch.cat(out)

    return run


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('export', type=Path, nargs='?', help='trained tiny-preset export')
    parser.add_argument('--shape', choices=('demo', 'sd15'), default='demo')
    parser.add_argument('--sd15-folder', type=Path, default=Path('outputs/random-sd15'))
    parser.add_argument('--num', type=int, default=None, help='held-out masks (32; sd15: 2)')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--image-size', type=int, default=None, help='64 (sd15: 256)')
    parser.add_argument('--steps', type=int, default=None, help='anchor steps (20; sd15: 8)')
    parser.add_argument('--fast-steps', type=int, default=None, help='fewer steps (10; sd15: 4)')
    parser.add_argument('--guidance-scale', type=float, default=3.0)
    parser.add_argument('--guidance-fraction', type=float, default=0.5)
    parser.add_argument('--rounds', type=int, default=3, help='interleaved timed rounds')
    parser.add_argument('--device', default='cpu')
    add_results_argument(parser)
    args = parser.parse_args(argv)
    sd15 = args.shape == 'sd15'
    if not sd15 and args.export is None:
        parser.error('the export is required without --shape sd15')
    defaults = {'num': (32, 2), 'image_size': (64, 256), 'steps': (20, 8), 'fast_steps': (10, 4)}
    for name, values in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, values[sd15])

    masks, prompts, segmenter = held_out(args)
    base = load_base(args)
    runs: dict[str, Callable[[], Tensor]] = {
        'anchor: diffusers pipeline': anchor(base, masks, prompts, args)
    }
    seeds = list(range(len(masks)))
    for name, synth in rows(base, args).items():

        def run(synth: Synthesizer = synth) -> Tensor:
            synth.prompts.clear()  # no warm cache carried over between runs
            return synth.generate(masks, prompts, seeds).cpu()

        runs[name] = run

    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        images = {name: run() for name, run in runs.items()}  # warm-up; these are scored
        for _ in range(args.rounds):  # interleaved: fair under a machine shared with others
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                if base.device.type == 'cuda':
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)

    rates = {name: len(masks) / statistics.median(t) for name, t in times.items()}
    reference = images['anchor: diffusers pipeline']
    scores = {name: _miou(segmenter, x, masks) for name, x in images.items()} if segmenter else {}
    print(
        f'{args.shape}: {args.device} ({torch.get_num_threads()} threads), '
        f'{args.image_size} px, {len(masks)} held-out masks, batch {args.batch_size}, '
        f'guidance {args.guidance_scale}, median of {args.rounds} interleaved rounds'
    )
    print(f'{"row":36s} {"images/s":>8s} {"speed-up":>8s} {"mIoU":>6s} {"MAD":>6s} {"PSNR":>6s}')
    table = {}
    for name, rate in rates.items():
        mad = (images[name] - reference).abs().mean().item()
        mse = (images[name] - reference).pow(2).mean().item()
        psnr = 10 * torch.log10(torch.tensor(255.0**2 / max(mse, 1e-10))).item()
        miou = f'{scores[name]:.3f}' if scores else '-'
        speedup = rate / rates['anchor: diffusers pipeline']
        print(f'{name:36s} {rate:8.2f} {speedup:7.2f}x {miou:>6s} {mad:6.2f} {psnr:6.1f}')
        table[name.strip()] = {
            'images_per_s': rate,
            'speedup': speedup,
            'mIoU': scores.get(name),
            'MAD': mad,
            'PSNR': psnr,
        }
    anchor_miou = scores.get('anchor: diffusers pipeline', 0.0)
    eligible = [n for n in rates if not scores or scores[n] >= anchor_miou - TOLERANCE]
    best = max(eligible, key=rates.__getitem__)
    print(f'fastest row within {TOLERANCE} mIoU: {best.strip()}')
    ratio = rates[best] / rates['anchor: diffusers pipeline']
    print(f'ratio: {ratio:.2f}')
    summary = {
        'shape': args.shape,
        'device': args.device,
        'image_size': args.image_size,
        'held_out': len(masks),
        'batch_size': args.batch_size,
        'rounds': args.rounds,
        'rows': table,
        'best': best.strip(),
        'ratio': ratio,
    }
    write_result(
        f'synthesis_quality_{args.shape}', summary, args.results, argv, script='synthesis_quality'
    )
    return summary


if __name__ == '__main__':
    main()
