#!/usr/bin/env python3

# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Images/s of a batched RFilter against the same rules scored one image at a time.

Both sides run the same `RFilter` configuration (tiny open_clip CLIP for alignment, a small
conv segmenter for layout, sanity, novelty against a flipped "real source" and a memory of
kept samples) on the scenes of a temporary mini corpus; the per-image side feeds the batches
one sample at a time. Their decisions are checked to be identical first. Measurements are
interleaved and the median rate of each is reported. It prints
``ratio: <batched / per-image>``.

    uv run python benchmarks/rfilter.py [--size 64] [--batch-size 32] [--batches 4] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
from provenance import add_results_argument, write_result
from torch import nn
from torch.utils.data import default_collate

from torchgeo_earthsynth.datasets import EarthSynth180K, make_mini_corpus
from torchgeo_earthsynth.metrics import tiny_open_clip
from torchgeo_earthsynth.rfilter import RFilter, select
from torchgeo_earthsynth.vocabulary import NUM_CLASSES


def make_filter(clip: nn.Module, segmenter: nn.Module, classes: int) -> RFilter:
    """The configuration both sides run; thresholds low enough that most samples pass."""
    # A segmenter with fewer classes than the vocabulary predicts land cover ids 0..classes-1.
    label_map = None if classes == NUM_CLASSES else list(range(classes))
    return RFilter(
        clip_model=clip,
        clip_tokenizer=open_clip.get_tokenizer('ViT-B-32'),
        alignment_threshold=1.0,
        segmenter=segmenter,
        segmenter_label_map=label_map,
        layout_threshold=0.0,
        novelty_threshold=0.98,
    )


def load_batches(root: Path, batch_size: int, batches: int) -> list[dict[str, Any]]:
    """Collated batches of mini-corpus scenes, each with a flipped copy as its reference."""
    dataset = EarthSynth180K(root, split='train', mode='full')
    samples = [dataset[i] for i in range(batch_size * batches)]
    out = []
    for start in range(0, len(samples), batch_size):
        batch = default_collate(samples[start : start + batch_size])
        batch['reference'] = batch['image'].flip(-1)
        out.append(batch)
    return out


def batched(rf: RFilter, batches: list[dict[str, Any]]) -> list[bool]:
    """Keep flags of every sample, scoring whole batches."""
    rf.reset()
    return [k for batch in batches for k in rf(batch).keep.tolist()]


def per_image(rf: RFilter, batches: list[dict[str, Any]]) -> list[bool]:
    """Keep flags of every sample, scoring one sample at a time."""
    rf.reset()
    keep = []
    for batch in batches:
        b = batch['image'].shape[0]
        for i in range(b):
            keep += rf(select(batch, torch.arange(b) == i)).keep.tolist()
    return keep


def rate(run: Callable[[], list[bool]], min_time: float) -> float:
    """Images per second of whole passes, repeated for at least ``min_time`` seconds."""
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_time or count == 0:
        count += len(run())
    return count / elapsed


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, default=64, help='image size in pixels')
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--batches', type=int, default=4)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument(
        '--classes',
        type=int,
        default=12,
        help=f'segmenter classes (land cover 12, all {NUM_CLASSES})',
    )
    parser.add_argument('--min-time', type=float, default=1.0, help='seconds per measurement')
    add_results_argument(parser)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    segmenter = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, args.classes, 1)
    ).eval()
    clip = tiny_open_clip().model
    with tempfile.TemporaryDirectory() as tmp:
        root = make_mini_corpus(
            tmp, size=args.size, num_train=args.batch_size * args.batches, num_val=1
        )
        data = load_batches(root, args.batch_size, args.batches)

    ours, theirs = (make_filter(clip, segmenter, args.classes) for _ in range(2))
    keep = batched(ours, data)
    assert keep == per_image(theirs, data), 'batched and per-image decisions differ'
    assert ours.counts == theirs.counts
    print(f'{sum(keep)} of {len(keep)} images kept; torch threads: {torch.get_num_threads()}')

    rates: dict[str, list[float]] = {'batched': [], 'per-image': []}
    for r in range(args.repeats):
        order = ['batched', 'per-image'] if r % 2 == 0 else ['per-image', 'batched']
        for name in order:
            if name == 'batched':
                rates[name].append(rate(lambda: batched(ours, data), args.min_time))
            else:
                rates[name].append(rate(lambda: per_image(theirs, data), args.min_time))
    fast = statistics.median(rates['batched'])
    slow = statistics.median(rates['per-image'])
    print(
        f'images: {args.size} px, batch {args.batch_size}, {args.batches} batches, '
        f'segmenter classes {args.classes}'
    )
    print(f'batched RFilter:    {fast:8.1f} images/s')
    print(f'per-image scoring:  {slow:8.1f} images/s')
    print(f'ratio: {fast / slow:.2f}')
    summary = {
        'size': args.size,
        'batch_size': args.batch_size,
        'batches': args.batches,
        'classes': args.classes,
        'kept': sum(keep),
        'images_per_s': {'batched': round(fast, 2), 'per_image': round(slow, 2)},
        'ratio': round(fast / slow, 4),
    }
    write_result('rfilter', summary, args.results, argv)
    return summary


if __name__ == '__main__':
    main()
