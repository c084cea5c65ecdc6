# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The demo's bank and downstream stages, shared with the R-Filter/CF-Comp ablation."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from torchgeo_earthsynth.bank.layouts import LayoutDraw, class_counts, draw_layouts
from torchgeo_earthsynth.metrics import MaskGenerator, PixelClassifier, generate_images

if TYPE_CHECKING:
    from torchgeo_earthsynth.demo.config import DemoConfig
    from torchgeo_earthsynth.evaluation.data_efficiency import DataEfficiencyResult
    from torchgeo_earthsynth.rfilter.filter import RFilterSummary


@dataclass
class BankResult:
    """What went into a synthetic bank, and what R-Filter dropped and why.

    Attributes:
        folder: the bank's folder.
        generated: samples generated.
        kept: samples R-Filter kept (all of them with the filter off).
        layout_threshold: the calibrated layout threshold (None with the filter off).
        summary: R-Filter's per-rule counts (None with the filter off).
        drawn_classes: masks holding each class among the generated layouts.
        kept_classes: the same among the kept samples.
        dropped: ``(sample, reason)`` for every dropped sample.

    .. versionadded:: 0.2
    """

    folder: Path
    generated: int
    kept: int
    layout_threshold: float | None
    summary: RFilterSummary | None
    drawn_classes: dict[str, int]
    kept_classes: dict[str, int]
    dropped: list[tuple[int, str]] = field(default_factory=list)


def build_bank(
    generator: MaskGenerator,
    train: Sequence[dict[str, Any]],
    segmenter: PixelClassifier,
    folder: Path,
    *,
    count: int,
    draw: LayoutDraw = 'cf-comp',
    rfilter: bool = True,
    layout_quantile: float = 0.1,
    layout_fraction: float = 0.5,
    seed: int = 0,
) -> BankResult:
    """Draw layouts from training scenes, generate them, R-Filter them into a bank.

    R-Filter's layout threshold is calibrated on the real training scenes
    (:meth:`~torchgeo_earthsynth.rfilter.RFilter.calibrate_layout`: ``layout_fraction`` of
    the ``layout_quantile`` of their scores); the alignment rule runs on a tiny random CLIP,
    so it reports and cannot drop (threshold 0).

    Args:
        generator: the generator (``Synthesizer``-like).
        train: real training samples (layouts are drawn from them, never from held-out ones).
        segmenter: the pixel classifier of the layout rule (0..255 images).
        folder: the bank folder, replaced.
        count: layouts to generate.
        draw: how layouts are drawn (:func:`~torchgeo_earthsynth.bank.draw_layouts`).
        rfilter: filter the samples (False keeps every one).
        layout_quantile: quantile of the real scenes' layout scores.
        layout_fraction: share of that quantile a sample must reach.
        seed: seed of the draws and of the tiny CLIP.

    Returns:
        The bank's summary.

    .. versionadded:: 0.2
    """
    from torchgeo_earthsynth.bank.store import SyntheticBank
    from torchgeo_earthsynth.metrics import tiny_open_clip
    from torchgeo_earthsynth.rfilter.filter import RFilter

    layouts = draw_layouts(train, count, draw, seed)
    batch: dict[str, Any] = {
        'image': generate_images(generator, layouts, desc='    bank'),
        'mask': torch.stack([s['mask'] for s in layouts]),
        'prompt': [s['prompt'] for s in layouts],
        'reference': torch.stack([s['image'] for s in layouts]),
    }
    keep = torch.ones(count, dtype=torch.bool)
    threshold = summary = None
    dropped: list[tuple[int, str]] = []
    if rfilter:
        clip = tiny_open_clip(seed)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # the tiny CLIP is random: alignment is reported only
            rule = RFilter(
                clip_model=clip.model,
                clip_tokenizer=clip.tokenizer,
                alignment_threshold=0.0,
                segmenter=segmenter,
                normalize_std=(1.0, 1.0, 1.0),  # the pixel classifier takes 0..255 images
            )
        real = {
            'image': torch.stack([s['image'] for s in train]),
            'mask': torch.stack([s['mask'] for s in train]),
        }
        threshold = rule.calibrate_layout(real, layout_quantile, layout_fraction)
        result = rule(batch)
        keep, summary = result.keep, rule.summary()
        dropped = [(i, why) for i, why in enumerate(result.reasons) if why]
    if folder.exists():
        shutil.rmtree(folder)
    bank = SyntheticBank(folder)
    kept = [
        {
            'image': batch['image'][i],
            'mask': batch['mask'][i],
            'prompt': batch['prompt'][i],
            'seed': i,
            'source': 'synthetic',
        }
        for i in range(count)
        if bool(keep[i])
    ]
    bank.add(kept)
    bank.consolidate()
    return BankResult(
        folder,
        count,
        len(kept),
        threshold,
        summary,
        class_counts(batch['mask']),
        class_counts([s['mask'] for s in kept]),
        dropped,
    )


def downstream_study(
    config: DemoConfig,
    bank: Path | None,
    budgets: Sequence[int | None],
    arms: Sequence[str],
    output: Path,
) -> DataEfficiencyResult:
    """TorchGeo's ``SemanticSegmentationTask`` per budget, arm and seed on the mini corpus.

    Args:
        config: the demo settings (corpus, downstream model, steps, seeds, batch size).
        bank: the synthetic bank for the synthetic arms (None: ``real`` only).
        budgets: real labelled scenes per run (None: all).
        arms: ``real``, ``real+synthetic``, ``synthetic-only``.
        output: folder of the study.

    Returns:
        The study.

    .. versionadded:: 0.2
    """
    from torchgeo_earthsynth.evaluation.data_efficiency import run_data_efficiency

    accelerator = 'gpu' if config.device.startswith('cuda') else config.device
    data_args: dict[str, Any] = {
        'batch_size': config.downstream_batch_size,
        'num_workers': 0,
        'root': None if config.root is None else str(config.root),
        'tile_size': config.image_size,
        'seed': config.seed,
        'num_train': config.num_train,
        'num_val': config.num_val,
        'long_tail': config.long_tail,
    }
    synthetic = {} if bank is None else {'bank': str(bank), 'synthetic': {'p': 0.5}}
    return run_data_efficiency(
        {
            'task': 'segmentation',
            'data': {
                'class_path': 'torchgeo_earthsynth.datamodules.downstream.'
                'MiniSegmentationDataModule',
                'init_args': data_args,
            },
            **synthetic,
            # constant LR: TorchGeo's plateau schedule (patience in epochs) would cut it
            # within a few steps of a small budget
            'model': {**config.downstream_model, 'patience': config.downstream_steps},
            'arms': list(arms),
            'seeds': list(config.seeds),
            # small budgets repeat within an epoch of this many samples (one batch size for all)
            'epoch_samples': config.epoch_samples,
            'trainer': {
                'accelerator': accelerator,
                'max_steps': config.downstream_steps,
                'limit_val_batches': 1,
            },
            'output': str(output),
            'progress': True,
        },
        budgets,
    )


__all__ = ('BankResult', 'build_bank', 'downstream_study')
