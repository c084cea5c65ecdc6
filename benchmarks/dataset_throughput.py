#!/usr/bin/env python3

# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Samples/s of EarthSynth180K against a bare PIL loop that builds the same tensors.

Both read the same PNGs of a temporary mini corpus (full samples, prompts from the JSONL);
measurements are interleaved (alternating which goes first) and the median rate of each is
reported. The bare loop does no checking at all, so the ratio is the price of the dataset's
checks and bookkeeping. It prints ``ratio: <dataset / bare at the first tile size>``.

    uv run python benchmarks/dataset_throughput.py [--sizes 512 64] [--tiles 64] [--repeats 7]

The result goes to ``benchmarks/results/dataset_throughput.json`` (``--results DIR``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from provenance import add_results_argument, write_result

from torchgeo_earthsynth.conditions import metadata_from_record
from torchgeo_earthsynth.datasets import EarthSynth180K, make_mini_corpus
from torchgeo_earthsynth.datasets.layout import jsonl_path
from torchgeo_earthsynth.vocabulary import multi_hot, source_from_stem


def bare_samples(split_dir: Path) -> Callable[[], list[dict[str, Any]]]:
    """A loader of the full records of a split's JSONL with PIL and no checks."""
    records = [json.loads(line) for line in jsonl_path(split_dir).open()]
    records = [r for r in records if r['file_name'].startswith('images/')]

    def load() -> list[dict[str, Any]]:
        samples = []
        for record in records:
            with Image.open(split_dir / record['file_name']) as f:
                image = np.asarray(f)
            with Image.open(split_dir / record['mask_name']) as f:
                mask = torch.from_numpy(np.asarray(f).astype(np.int64))
            samples.append(
                {
                    'image': torch.from_numpy(
                        np.ascontiguousarray(image.transpose(2, 0, 1))
                    ).float(),
                    'mask': mask,
                    'prompt': record['text'],
                    'categories': multi_hot(mask),
                    'source': source_from_stem(Path(record['file_name']).stem),
                    # every mini record has a metadata object: no source-GSD fallback needed
                    'metadata': metadata_from_record(record.get('metadata')),
                }
            )
        return samples

    return load


def dataset_samples(dataset: EarthSynth180K) -> Callable[[], list[dict[str, Any]]]:
    """A loader of every sample of the dataset."""
    return lambda: [dataset[i] for i in range(len(dataset))]


def rate(load: Callable[[], list[dict[str, Any]]], min_time: float) -> float:
    """Samples per second of whole passes, repeated for at least ``min_time`` seconds."""
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_time or count == 0:
        count += len(load())
    return count / elapsed


def same(a: Any, b: Any) -> bool:
    """Equal values; tensors element for element, NaN (an unknown metadata field) equal to NaN."""
    if not torch.is_tensor(a):
        return bool(a == b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool(((a == b) | (a.isnan() & b.isnan())).all())


def measure(root: Path, repeats: int, min_time: float) -> tuple[float, float]:
    """Median samples/s of the dataset and of the bare loop, interleaved."""
    dataset = dataset_samples(EarthSynth180K(root, split='train', mode='full'))
    bare = bare_samples(root / 'train')
    for ours, theirs in zip(dataset(), bare(), strict=True):  # same files, same tensors
        # a key the dataset gains must be built by the bare loop too, or the ratio flatters us
        assert ours.keys() == theirs.keys(), (
            f'dataset keys {sorted(ours)} != bare loop keys {sorted(theirs)}'
        )
        for key, value in ours.items():
            assert same(value, theirs[key]), f'dataset and bare loop differ in {key!r}'
    rates: dict[str, list[float]] = {'dataset': [], 'bare': []}
    for repeat in range(repeats):
        order = [('dataset', dataset), ('bare', bare)]
        for name, load in order if repeat % 2 == 0 else order[::-1]:
            rates[name].append(rate(load, min_time))
    return statistics.median(rates['dataset']), statistics.median(rates['bare'])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Build the corpora, measure, print a table and the ratio; write the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[512, 64], help='tile sizes')
    parser.add_argument('--tiles', type=int, default=64, help='tiles per corpus')
    parser.add_argument('--repeats', type=int, default=7, help='measurements of each loader')
    parser.add_argument('--min-time', type=float, default=0.5, help='seconds per measurement')
    parser.add_argument('--threads', type=int, default=1, help='torch threads (1: as a worker)')
    add_results_argument(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            root = make_mini_corpus(tmp, seed=0, size=size, num_train=args.tiles, num_val=0)
            ours, bare = measure(root, args.repeats, args.min_time)
            results.append((size, ours, bare))
            print(
                f'{size:>4} px, {args.tiles} tiles: EarthSynth180K {ours:8.1f} samples/s, '
                f'bare PIL loop {bare:8.1f} samples/s, ratio {ours / bare:.3f}',
                flush=True,
            )
    size, ours, bare = results[0]
    print(f'ratio: {ours / bare:.3f}')
    summary = {
        'tiles': args.tiles,
        'repeats': args.repeats,
        'threads': args.threads,
        'samples_per_s': [
            {'size': s, 'dataset': round(o, 2), 'bare': round(b, 2), 'ratio': round(o / b, 4)}
            for s, o, b in results
        ],
        'ratio': round(ours / bare, 4),
    }
    write_result('dataset_throughput', summary, args.results, argv)
    return summary


if __name__ == '__main__':
    main()
