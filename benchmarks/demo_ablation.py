#!/usr/bin/env python3

# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""EarthSynth's two claims on the demo: downstream with and without R-Filter and CF-Comp.

The shipped generator renders one bank per setting (bank layouts drawn with CF-Comp category
composition or uniformly from the training masks; R-Filter on or off), each from the same
training scenes with the same seeds; every bank then trains the demo's downstream study
(TorchGeo ``SemanticSegmentationTask``, real vs real+synthetic, paired seeds). The table gives
each setting's paired difference to real-only per budget, and the mean test IoU of the rare
classes (those in fewer than ``--rare-below`` training scenes), where the paper expects the gain.

    uv run python benchmarks/demo_ablation.py [--budgets 4 16] [--seeds 0 1 2]
        [--downstream-steps 300] [--num-bank 128] [--output outputs/demo_ablation]

Writes ``<output>/ablation.md`` and ``benchmarks/results/demo_ablation.json`` (``--results DIR``
elsewhere) with when and where it was measured.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from provenance import add_results_argument, write_result

from torchgeo_earthsynth.bank.layouts import class_counts
from torchgeo_earthsynth.demo import DemoConfig, demo_datamodule
from torchgeo_earthsynth.demo.stages import build_bank, downstream_study
from torchgeo_earthsynth.metrics import PixelClassifier
from torchgeo_earthsynth.models import shipped_generator
from torchgeo_earthsynth.synthesis import Synthesizer

#: (name, bank layout draw, R-Filter on)
SETTINGS = (
    ('CF-Comp + R-Filter', 'cf-comp', True),
    ('CF-Comp, no R-Filter', 'cf-comp', False),
    ('uniform + R-Filter', 'uniform', True),
    ('uniform, no R-Filter', 'uniform', False),
)


def _budget(text: str) -> int | None:
    return None if text == 'all' else int(text)


def _rare_iou(per_class: Sequence[dict[str, Any]], rare: Sequence[str]) -> dict[tuple, float]:
    """Mean test IoU over the rare classes, per (real scenes, arm)."""
    means = {}
    for row in per_class:
        values = [row[c] for c in rare if c in row and not math.isnan(row[c])]
        means[(row['real scenes'], row['arm'])] = sum(values) / len(values) if values else math.nan
    return means


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every setting's bank and downstream study; returns the results."""
    config = DemoConfig(
        output=args.output,
        seeds=tuple(args.seeds),
        downstream_budgets=tuple(args.budgets),
        downstream_steps=args.downstream_steps,
        num_bank=args.num_bank,
        num_train=args.num_train,
        num_val=args.num_val,
    )
    datamodule = demo_datamodule(config, normalize=False)
    datamodule.prepare_data()
    datamodule.setup('fit')
    train = [datamodule.train_dataset[i] for i in range(len(datamodule.train_dataset))]
    counts = class_counts([s['mask'] for s in train])
    rare = [name for name, n in counts.items() if n < args.rare_below]
    generator = Synthesizer.from_pretrained(
        args.generator or shipped_generator(),
        num_inference_steps=config.inference_steps,
        guidance_scale=config.guidance_scale,
    )
    segmenter = PixelClassifier().fit(
        torch.stack([s['image'] for s in train[:128]]),
        torch.stack([s['mask'] for s in train[:128]]),
        seed=config.seed,
    )
    rows: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    for name, draw, rfilter in SETTINGS:
        start = time.perf_counter()
        slug = name.replace(' ', '').replace(',', '_').replace('+', '_')
        bank = build_bank(
            generator,
            train,
            segmenter,
            args.output / slug / 'bank',
            count=config.num_bank,
            draw=draw,  # type: ignore[arg-type]
            rfilter=rfilter,
            seed=config.seed,
        )
        study = downstream_study(
            config,
            bank.folder,
            list(config.downstream_budgets),
            ['real', 'real+synthetic'],
            args.output / slug / 'downstream',
        )
        rare_iou = _rare_iou(study.per_class(), rare)
        for r in study.rows:
            rows.append(
                {
                    'setting': name,
                    'kept': f'{bank.kept}/{bank.generated}',
                    'rare_class_scenes': {c: bank.kept_classes.get(c, 0) for c in rare},
                    'real_scenes': r.real_samples,
                    'arm': r.arm,
                    'n': r.n,
                    'miou': r.mean,
                    'miou_95': [r.low, r.high],
                    'diff': r.diff,
                    'diff_95': [r.diff_low, r.diff_high],
                    'verdict': r.verdict,
                    'rare_iou': rare_iou.get((r.real_samples, r.arm), math.nan),
                }
            )
        timings[name] = round(time.perf_counter() - start, 1)
    return {
        'rare_below': args.rare_below,
        'rare_classes': rare,
        'rows': rows,
        'timings_s': timings,
    }


def to_markdown(result: dict[str, Any]) -> str:
    """The result as a Markdown table, one line per setting, budget and arm."""
    lines = [
        f'Rare classes (in fewer than {result["rare_below"]} training scenes): '
        + ', '.join(result['rare_classes']),
        '',
        '| setting | bank kept | real scenes | arm | test mIoU [95% CI] | diff vs real [95% CI] '
        '| verdict | rare-class IoU |',
        '|---|---|---:|---|---|---|---|---:|',
    ]
    for row in result['rows']:
        low, high = row['miou_95']
        diff = ''
        if row['diff'] is not None:
            diff = f'{row["diff"]:+.3f} [{row["diff_95"][0]:+.3f}, {row["diff_95"][1]:+.3f}]'
        lines.append(
            f'| {row["setting"]} | {row["kept"]} | {row["real_scenes"]} | {row["arm"]} '
            f'| {row["miou"]:.3f} [{low:.3f}, {high:.3f}] | {diff} | {row["verdict"]} '
            f'| {row["rare_iou"]:.3f} |'
        )
    return '\n'.join(lines) + '\n'


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse arguments, run, write ``ablation.md`` and the results JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--budgets', nargs='+', type=_budget, default=[4, 16])
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--downstream-steps', type=int, default=300)
    parser.add_argument('--num-bank', type=int, default=128)
    parser.add_argument('--num-train', type=int, default=256)
    parser.add_argument('--num-val', type=int, default=64)
    parser.add_argument('--rare-below', type=int, default=32, help='rare: in fewer scenes')
    parser.add_argument('--generator', type=Path, default=None, help='default: the shipped one')
    parser.add_argument('--output', type=Path, default=Path('outputs/demo_ablation'))
    add_results_argument(parser)
    args = parser.parse_args(argv)
    result = run(args)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / 'ablation.md').write_text(to_markdown(result))
    write_result('demo_ablation', result, args.results, argv)
    print(to_markdown(result))
    return result


if __name__ == '__main__':
    import sys

    main(sys.argv[1:])
