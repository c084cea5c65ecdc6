# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Downstream training samples/s with SyntheticAugmentation drawing from a bank vs without.

Both sides train TorchGeo's own ``SemanticSegmentationTask`` (U-Net, ResNet-18, no weights)
with the Lightning Trainer on ``MiniSegmentationDataModule`` (the 64 px mini corpus), batch
16; the augmented side replaces each sample with probability 0.5 by a sample of a
``SyntheticBank`` (pre-loaded into the module's tensor cache). The bank is made from the mini
corpus with inverted images unless ``--bank`` names a filled one. The two variants alternate
over several rounds in one process (in ABBA order), each run from the same seed. A run's
rate is the batch size over its fastest step time (a step timed end to end: loading, the
augmentation, forward, backward, optimiser); the ratio is the median over rounds of each
round's with/without rate ratio.

With ``--task detection`` both sides train TorchGeo's ``ObjectDetectionTask`` (Faster R-CNN,
ResNet-18, no weights) on random scenes with one to three boxes each (VHR-10's labels),
collated as TorchGeo's detection datamodules do; the augmented side replaces samples with
probability 0.5 by bank samples generated from boxes, which bring their exact boxes.

Usage: uv run python benchmarks/augmentation.py [--task segmentation|detection] [--steps 15]
[--rounds 5] [--device cpu]
It prints ``ratio: <with augmentation / without>``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from detection_data import BoxScenesDataModule, make_box_bank
from provenance import add_results_argument, write_result
from torch.utils.data import default_collate

from torchgeo_earthsynth.bank import SyntheticBank
from torchgeo_earthsynth.compat import ObjectDetectionTask, SemanticSegmentationTask
from torchgeo_earthsynth.datamodules.downstream import MiniSegmentationDataModule
from torchgeo_earthsynth.datasets import EarthSynth180K, make_mini_corpus
from torchgeo_earthsynth.transforms.synthetic_augmentation import SyntheticAugmentation

WARMUP = 3  # untimed steps per run


class Timer(pl.Callback):
    """Duration of each training step after ``warmup``, end to end (synchronising CUDA).

    A step's duration runs from the end of the previous step to the end of this one, so it
    holds loading, transfer, ``on_after_batch_transfer`` (where the augmentation runs),
    forward, backward and the optimiser step.
    """

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        """Note when the step ended."""
        if pl_module.device.type == 'cuda':
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())

    @property
    def durations(self) -> list[float]:
        """Seconds per timed step."""
        timed = self.ends[self.warmup - 1 :]
        return [b - a for a, b in itertools.pairwise(timed)]


def make_bank(corpus: Path, folder: Path) -> SyntheticBank:
    """A bank of the corpus' layouts with inverted images (stand-ins for generated ones)."""
    bank = SyntheticBank(folder, durable=False)
    dataset = EarthSynth180K(corpus)
    bank.add([{**s, 'image': 255 - s['image']} for s in (dataset[i] for i in range(len(dataset)))])
    return bank.refresh()


def module_cost(corpus: Path, bank: SyntheticBank, batch_size: int, device: str) -> None:
    """Print the per-batch time of ``train_aug`` (augmentation + normalisation) vs ``aug``."""
    synthetic = SyntheticAugmentation(source='bank', bank=bank, p=0.5, unmapped_index=0)
    datamodule = MiniSegmentationDataModule(batch_size=batch_size, root=corpus, synthetic=synthetic)
    datamodule.setup('fit')
    assert datamodule.train_dataset is not None
    samples = [datamodule.train_dataset[i] for i in range(batch_size)]
    batch = {k: v.to(device) for k, v in default_collate(samples).items()}
    assert datamodule.train_aug is not None
    times: dict[str, list[float]] = {'train_aug': [], 'aug': []}
    for _ in range(50):
        for name, transform in (('train_aug', datamodule.train_aug), ('aug', datamodule.aug)):
            start = time.perf_counter()
            transform(dict(batch))
            if device == 'cuda':
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    ms = {name: 1e3 * statistics.median(values) for name, values in times.items()}
    print(
        f'per batch: train_aug (synthetic + aug) {ms["train_aug"]:.2f} ms, '
        f'aug alone {ms["aug"]:.2f} ms'
    )


def run(
    corpus: Path | None,
    bank: SyntheticBank | None,
    steps: int,
    batch_size: int,
    device: str,
    size: int,
) -> tuple[float, dict[str, int]]:
    """Train for ``steps`` timed steps (after the warm-up).

    Args:
        corpus: the mini corpus to train segmentation on; None: detection on box scenes.
        bank: draw synthetic samples from it (p = 0.5); None: no augmentation.
        steps: timed steps.
        batch_size: samples per step.
        device: the Lightning accelerator.
        size: side of the box scenes (detection).

    Returns:
        Samples/s of the fastest step and the augmentation's counters.
    """
    pl.seed_everything(0, verbose=False)
    synthetic = None
    datamodule: pl.LightningDataModule
    task: pl.LightningModule
    if corpus is None:
        if bank is not None:
            synthetic = SyntheticAugmentation(
                dataset='VHR10', task='detection', source='bank', bank=bank, p=0.5
            )
        num = batch_size * (steps + WARMUP + 1)
        datamodule = BoxScenesDataModule(batch_size, size, num, synthetic)
        task = ObjectDetectionTask(
            model='faster-rcnn', backbone='resnet18', weights=None, num_classes=11
        )
    else:
        if bank is not None:
            synthetic = SyntheticAugmentation(source='bank', bank=bank, p=0.5, unmapped_index=0)
        datamodule = MiniSegmentationDataModule(
            batch_size=batch_size, root=corpus, synthetic=synthetic
        )
        task = SemanticSegmentationTask(
            model='unet', backbone='resnet18', weights=None, num_classes=len(datamodule.classes)
        )
    timer = Timer(WARMUP)
    trainer = pl.Trainer(
        accelerator=device,
        devices=1,
        max_steps=steps + WARMUP,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(task, datamodule)
    # The least disturbed step (as timeit does): load from other processes on a shared
    # machine comes in bursts longer than a step, and no step of a run does extra work.
    rate = batch_size / min(timer.durations)
    return rate, dict(synthetic.stats) if synthetic is not None else {}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--steps', type=int, default=15, help='timed steps per run')
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--size', type=int, default=64)
    parser.add_argument('--bank', type=Path, default=None, help='a filled SyntheticBank root')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--task', choices=('segmentation', 'detection'), default='segmentation')
    add_results_argument(parser)
    args = parser.parse_args(argv)
    detection = args.task == 'detection'

    with tempfile.TemporaryDirectory() as tmp:
        corpus = None  # detection trains on random box scenes
        if not detection:
            # One epoch covers every step: TorchGeo's plateau scheduler wants val_loss at
            # epoch end.
            num_train = max(256, args.batch_size * (args.steps + WARMUP + 1))
            corpus = make_mini_corpus(
                Path(tmp), seed=0, size=args.size, num_train=num_train, num_val=8
            )
        if args.bank:
            bank = SyntheticBank(args.bank)
        elif corpus is None:
            bank = make_box_bank(Path(tmp) / 'bank', args.size)
        else:
            bank = make_bank(corpus, Path(tmp) / 'bank')
        print(f'bank: {bank!r}, {len(bank)} samples')
        if corpus is not None:
            module_cost(corpus, bank, args.batch_size, args.device)
        rates: dict[str, list[float]] = {'without': [], 'with bank (p=0.5)': []}
        stats: dict[str, int] = {}
        for round_ in range(args.rounds):
            order = (None, bank) if round_ % 2 == 0 else (bank, None)  # ABBA against drift
            for source in order:
                rate, run_stats = run(
                    corpus, source, args.steps, args.batch_size, args.device, args.size
                )
                if source is None:
                    rates['without'].append(rate)
                else:
                    rates['with bank (p=0.5)'].append(rate)
                    stats = run_stats
    for name, values in rates.items():
        print(
            f'{name:>18}: {statistics.median(values):8.1f} samples/s '
            f'(runs: {", ".join(f"{v:.1f}" for v in values)})'
        )
    print(f'augmentation stats of the last run: {stats}')
    # Each round's two runs are back to back, so their ratio is the least affected by load
    # drifting on a shared machine; report the median over rounds.
    paired = [w / wo for w, wo in zip(rates['with bank (p=0.5)'], rates['without'])]
    print(f'per-round ratios: {", ".join(f"{r:.3f}" for r in paired)}')
    print(f'ratio: {statistics.median(paired):.3f}')
    summary = {
        'task': args.task,
        'size': args.size,
        'batch_size': args.batch_size,
        'steps': args.steps,
        'rounds': args.rounds,
        'device': args.device,
        'samples_per_s': {name: statistics.median(values) for name, values in rates.items()},
        'stats': stats,
        'paired_ratios': paired,
        'ratio': statistics.median(paired),
    }
    # segmentation and detection are two measurements: one file each
    write_result(f'augmentation_{args.task}', summary, args.results, argv, script='augmentation')
    return summary


if __name__ == '__main__':
    main()
