# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The LightningCLI classes of ``earthsynth``; imported only by the commands that need them."""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI


def checkpoints_follow_the_run(trainer: Trainer) -> list[ModelCheckpoint]:
    """Point each ``ModelCheckpoint`` without a ``dirpath`` at ``<default_root_dir>/checkpoints``.

    Lightning's default is the logger's new ``version_N/checkpoints`` each run, where
    ``--ckpt_path last`` of the next run finds nothing; one fixed folder under the run's root
    lets it resume. A fresh run (no ``--ckpt_path``) into the same root overwrites that
    folder's ``last.ckpt`` rather than writing ``last-v1.ckpt`` beside it, so ``last`` always
    names the latest run. A ``dirpath`` given in the config is kept as it is.

    Args:
        trainer: the trainer whose callbacks to adjust.

    Returns:
        The checkpoint callbacks whose folder was set here.
    """
    folder = os.path.realpath(os.path.join(trainer.default_root_dir, 'checkpoints'))
    adjusted = []
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
            callback.dirpath = folder
            # one folder for every run of this root: a version counter would only add copies
            callback._enable_version_counter = False
            adjusted.append(callback)
    return adjusted


class EarthSynthCLI(LightningCLI):
    """TorchGeo's LightningCLI whose checkpoints go under ``trainer.default_root_dir``."""

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Instantiate the trainer, then :func:`checkpoints_follow_the_run`.

        Args:
            **kwargs: as :meth:`LightningCLI.instantiate_trainer`.

        Returns:
            The trainer.
        """
        trainer = super().instantiate_trainer(**kwargs)
        checkpoints_follow_the_run(trainer)
        return trainer


class SynthesizeCLI(LightningCLI):
    """LightningCLI for ``earthsynth synthesize``: model, data, ``bank`` writer, trainer."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        """Add the bank writer (a Trainer callback), the checkpoint, and link the bank."""
        from torchgeo_earthsynth.lightning_modules.synthesizer import BankWriter

        parser.add_lightning_class_args(BankWriter, 'bank')
        parser.add_argument(
            '--ckpt_path',
            type=str | None,
            default=None,
            help='Lightning checkpoint to load into the model',
        )
        parser.add_argument(
            '--allow_untrained',
            '--allow-untrained',
            action='store_true',
            help='synthesize with a model that has no trained weights (no ckpt_path, '
            'pretrained or controlnet): it writes noise into the bank',
        )
        parser.link_arguments('bank.root', 'data.init_args.bank_root')
        parser.link_arguments('bank.split', 'data.init_args.bank_split')


__all__ = ('EarthSynthCLI', 'SynthesizeCLI', 'checkpoints_follow_the_run')
