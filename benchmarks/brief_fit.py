# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Train a tiny diffusion task briefly on the mini corpus (shared by the following benchmarks)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from torchgeo_earthsynth.datamodules import EarthSynthMiniDataModule
from torchgeo_earthsynth.lightning_modules import DiffusionTask


def add_fit_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the brief training's options (steps, corpus, optimizer, sampling) to ``parser``."""
    parser.add_argument('--steps', type=int, default=600, help='diffusion training steps')
    parser.add_argument('--vae-steps', type=int, default=150, help='VAE warm-up steps')
    parser.add_argument('--size', type=int, default=32, help='training/generation px')
    parser.add_argument('--num-train', type=int, default=256)
    parser.add_argument('--num-eval', type=int, default=32)
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--sample-steps', type=int, default=10)
    parser.add_argument('--guidance', type=float, default=2.0)
    parser.add_argument('--root', type=Path, default=None, help='corpus cache folder')


def fit_on_mini(
    task: DiffusionTask,
    args: argparse.Namespace,
    root: Path,
    tile_size: int | None = None,
    **corpus: Any,
) -> float:
    """Fit ``task`` for ``args.vae_steps + args.steps`` on the mini corpus, no validation.

    Lightning keeps the task's train/eval mode: call ``task.train()`` first for the
    training-only behaviour (prompt and condition dropout).

    Args:
        task: the task (trained in place).
        args: the options of :func:`add_fit_arguments`.
        root: the corpus cache folder.
        tile_size: corpus tile size (px; default ``args.size``).
        **corpus: further mini corpus options (e.g. ``latitudes``).

    Returns:
        The wall time of the fit (s).
    """
    datamodule = EarthSynthMiniDataModule(
        batch_size=args.batch_size,
        size=args.size,
        normalize=False,
        root=root,
        seed=0,
        tile_size=tile_size or args.size,
        num_train=args.num_train,
        num_val=args.num_eval,
        **corpus,
    )
    trainer = pl.Trainer(
        accelerator='cpu',
        max_steps=args.vae_steps + args.steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(task, datamodule)
    return time.perf_counter() - start
