# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Mask fidelity of a trained tiny generator on held-out masks; installs the shipped one.

The recipe of the generator ``earthsynth demo`` loads by default:

    uv run earthsynth fit --config configs/mini_generator.yaml
    uv run python benchmarks/shipped_generator.py outputs/mini_generator/export --install

The first command trains tiny EarthSynth on the long-tailed mini corpus (32 px); the second
scores the export as the demo does (a pixel classifier fitted on 128 real training images,
its mIoU against 64 held-out condition masks: real images, the export, the export given
shuffled masks, an untrained twin) and, with ``--install``, copies it with its SHA-256 sums
and these figures into ``torchgeo_earthsynth/weights/mini_generator``. Without an export it
scores the shipped generator. Results go to ``benchmarks/results/shipped_generator.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from provenance import add_results_argument, write_result

from torchgeo_earthsynth.datasets import EarthSynthMini
from torchgeo_earthsynth.lightning_modules import EarthSynthControlNet
from torchgeo_earthsynth.metrics import REAL_ROW, generator_fidelity
from torchgeo_earthsynth.models.shipped import (
    SHIPPED_GENERATOR,
    install_generator,
    shipped_generator,
)
from torchgeo_earthsynth.synthesis import Synthesizer


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('export', type=Path, nargs='?', default=None, help='pipeline export')
    parser.add_argument('--num', type=int, default=64, help='held-out masks')
    parser.add_argument('--steps', type=int, default=20, help='sampling steps (UniPC)')
    parser.add_argument('--guidance', type=float, default=1.0)
    parser.add_argument('--install', action='store_true', help='ship the export')
    add_results_argument(parser)
    args = parser.parse_args(argv)
    export = args.export if args.export is not None else shipped_generator()
    start = time.perf_counter()

    meta = json.loads((export / 'earthsynth.json').read_text())
    size = int(meta['image_size'])
    train = EarthSynthMini(size=size, long_tail=True)
    val = EarthSynthMini(size=size, split='val', long_tail=True)
    held_out = [val[i] for i in range(min(args.num, len(val)))]
    scheduler = json.loads((export / 'scheduler' / 'scheduler_config.json').read_text())
    untrained = EarthSynthControlNet(
        image_size=size,
        condition_encoding=meta['condition_encoding'],
        prediction_type=scheduler['prediction_type'],
        tiny_vae_downscale=1,
    )
    trained = Synthesizer.from_pretrained(
        export, num_inference_steps=args.steps, guidance_scale=args.guidance
    )
    result = generator_fidelity(
        {'untrained': untrained.synthesizer(args.steps, args.guidance), 'trained': trained},
        [train[i] for i in range(min(128, len(train)))],
        held_out,
        shuffled_control='trained',
    )
    report: dict[str, Any] = {
        'training_steps': meta['global_step'],
        'held_out_masks': len(held_out),
        'sampling': {'steps': args.steps, 'guidance': args.guidance, 'seeds': 'index'},
        'mIoU': {name: round(r.miou, 4) for name, r in result.scores.items()},
        'seconds': round(time.perf_counter() - start, 1),
    }
    for name, miou in report['mIoU'].items():
        print(f'mask fidelity (mIoU) of {name}: {miou:.3f}')
    print(f'trained / real: {report["mIoU"]["trained"] / report["mIoU"][REAL_ROW]:.3f}')
    record = json.loads(write_result('shipped_generator', report, args.results, argv).read_text())
    if args.install:
        # the shipped fidelity.json is flat: its when and where beside the scores
        fidelity = {**{k: v for k, v in record.items() if k != 'results'}, **report}
        print(f'installed: {install_generator(export, fidelity, SHIPPED_GENERATOR)}')
    return report


if __name__ == '__main__':
    main()
