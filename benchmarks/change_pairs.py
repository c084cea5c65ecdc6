# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Do synthetic change pairs look like real change? A detector trained on real pairs judges.

Trains TorchGeo's ``ChangeDetectionTask`` on real pairs of the mini corpus
(``MiniChangeDetectionDataModule``: each place a year apart, half of them gaining buildings,
LEVIR-CD's layout), then scores with it, against exact change masks:

* real held-out pairs that gained buildings (the reference: how well it finds real change);
* synthetic pairs made from the same held-out "before" images (``make_change_pairs``: new
  buildings in-painted by the shipped tiny EarthSynth generator, the change mask exactly the
  edited region);
* the same edits in-painted by an untrained twin (the floor: change a detector finds in noise).

Change-pair fidelity is the detector's IoU of the change class on synthetic pairs, next to
real ones; per-pair IoUs give 95% intervals.

Usage: uv run python benchmarks/change_pairs.py [--steps 300] [--num-eval 32]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from provenance import add_results_argument, write_result
from torch import Tensor
from torch.utils.data import DataLoader

from torchgeo_earthsynth.compat import ChangeDetectionTask
from torchgeo_earthsynth.datamodules import MiniChangeDetectionDataModule
from torchgeo_earthsynth.datasets import EarthSynthMiniTemporal
from torchgeo_earthsynth.evaluation import interval95
from torchgeo_earthsynth.models import shipped_generator
from torchgeo_earthsynth.synthesis import Synthesizer
from torchgeo_earthsynth.transforms import make_change_pairs


def pair_iou(task: ChangeDetectionTask, pairs: Tensor, change: Tensor) -> list[float]:
    """The detector's IoU of the change class per pair (pairs 0..255 [B, 2, 3, H, W]).

    A pair with no change, predicted with none, scores 1.
    """
    task.eval()
    with torch.no_grad():
        logits = task(pairs.flatten(1, 2) / 255)
    predicted, truth = logits[:, 0] > 0, change.bool()
    inter = (predicted & truth).flatten(1).sum(1).float()
    union = (predicted | truth).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).tolist()


def summary(values: list[float]) -> dict[str, float]:
    mean, low, high = interval95(values)
    return {'iou': round(mean, 3), 'low': round(low, 3), 'high': round(high, 3)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=300, help='detector training steps')
    parser.add_argument('--num-train', type=int, default=256, help='real training places')
    parser.add_argument('--num-eval', type=int, default=32, help='held-out places scored')
    parser.add_argument('--size', type=int, default=32, help='tile size (the shipped: 32)')
    parser.add_argument('--sample-steps', type=int, default=20, help='in-painting steps')
    parser.add_argument('--generator', default=None, help='export folder (default: shipped)')
    parser.add_argument('--root', type=Path, default=None, help='mini corpus cache folder')
    add_results_argument(parser)
    args = parser.parse_args(argv)

    root = args.root or Path(tempfile.mkdtemp())
    data = {'root': root, 'tile_size': args.size, 'num_train': args.num_train}
    datamodule = MiniChangeDetectionDataModule(batch_size=16, num_val=2 * args.num_eval, **data)
    # TorchGeo's plateau scheduler reads val_loss each epoch: one validation batch, no patience
    task = ChangeDetectionTask(
        model='unet', backbone='resnet18', weights=None, loss='bce', patience=10_000
    )
    start = time.perf_counter()
    trainer = pl.Trainer(
        accelerator='cpu',
        max_steps=args.steps,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(task, datamodule=datamodule)
    train_seconds = time.perf_counter() - start

    # the test places: the second half of the held-out split, as the datamodule's test set
    # every test place gains buildings (change_probability 1), as every synthetic pair does
    held_out = EarthSynthMiniTemporal(
        root, 'val', 1, 1.0, size=args.size, num_train=args.num_train, num_val=2 * args.num_eval
    )
    places = [held_out[i] for i in range(args.num_eval, 2 * args.num_eval)]
    batch = next(iter(DataLoader(places, batch_size=len(places))))
    before = batch['frames'][:, :, -1]
    real = pair_iou(task, torch.stack([before, batch['image']], dim=1), batch['change'])

    seeds = list(range(len(places)))
    rows: dict[str, list[float]] = {'real pairs': real}
    generators = {
        'synthetic pairs (shipped generator)': Synthesizer.from_pretrained(
            args.generator or shipped_generator(), num_inference_steps=args.sample_steps
        ),
        'synthetic pairs (untrained twin)': Synthesizer.tiny(
            0, args.size, 'earthsynth', num_inference_steps=args.sample_steps
        ),
    }
    changed = 0.0
    for name, synth in generators.items():
        # the before images' own masks: buildings land on land, as in the real edits
        pairs, change = make_change_pairs(synth, before, seeds, masks=batch['before_mask'])
        rows[name] = pair_iou(task, pairs, change)
        changed = float(change.float().mean())
    result: dict[str, Any] = {
        'steps': args.steps,
        'train_seconds': round(train_seconds, 1),
        'pairs': len(places),
        'synthetic_changed_share': round(changed, 3),
        'rows': {name: summary(values) for name, values in rows.items()},
        'samples': rows,
    }
    for name, row in result['rows'].items():
        print(f'{name}: change IoU {row["iou"]:.3f} [{row["low"]:.3f}, {row["high"]:.3f}]')
    write_result('change_pairs', result, args.results, argv)
    return result


if __name__ == '__main__':
    main()
