# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The ``earthsynth`` command: TorchGeo's LightningCLI plus our extra subcommands."""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Final

from lightning.pytorch.cli import LightningCLI

#: Extra subcommands, each ``module:function`` taking the remaining argv.
EXTRA_COMMANDS: Final[dict[str, str]] = {
    'build-corpus': 'torchgeo_earthsynth.corpus_builder:main',
    'demo': 'torchgeo_earthsynth.demo:main',
    'evaluate': 'torchgeo_earthsynth.evaluation:main',
    'synthesize': 'torchgeo_earthsynth.cli:synthesize',
}


def lightning_main(args: Sequence[str] | None = None) -> None:
    """``fit|validate|test|predict``: TorchGeo's LightningCLI with our classes registered.

    Args:
        args: command-line arguments (default ``sys.argv[1:]``).
    """
    import torchgeo_earthsynth

    # Importing registers the classes, so configs may name them by class name too.
    import torchgeo_earthsynth.datamodules
    import torchgeo_earthsynth.lightning_modules
    import torchgeo_earthsynth.transforms
    from torchgeo_earthsynth.compat import BaseDataModule, BaseTask

    LightningCLI(
        model_class=BaseTask,
        datamodule_class=BaseDataModule,
        seed_everything_default=0,
        parser_kwargs={'version': torchgeo_earthsynth.__version__},
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={'overwrite': True},
        args=list(args) if args is not None else None,
    )


def _resolve(target: str) -> Callable[[Sequence[str]], None]:
    module, _, name = target.partition(':')
    function: Callable[[Sequence[str]], None] = getattr(importlib.import_module(module), name)
    return function


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``earthsynth`` console script.

    Args:
        args: command-line arguments (default ``sys.argv[1:]``).
    """
    # Lightning 2.6 calls a pytree API that torch 2.15 deprecates, once per fit: noise only.
    warnings.filterwarnings('ignore', message=r'`isinstance\(treespec, LeafSpec\)` is deprecated')
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in EXTRA_COMMANDS:
        _resolve(EXTRA_COMMANDS[argv[0]])(argv[1:])
    else:  # LightningCLI reads sys.argv itself when given no args
        lightning_main(None if args is None else argv)


class SynthesizeCLI(LightningCLI):
    """LightningCLI for ``earthsynth synthesize``: model, data, ``bank`` writer, trainer."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        """Add the bank writer (a Trainer callback), the checkpoint, and link the bank."""
        from .lightning_modules.synthesizer import BankWriter

        parser.add_lightning_class_args(BankWriter, 'bank')
        parser.add_argument(
            '--ckpt_path',
            type=str | None,
            default=None,
            help='Lightning checkpoint to load into the model',
        )
        parser.link_arguments('bank.root', 'data.bank_root')
        parser.link_arguments('bank.split', 'data.bank_split')


def synthesize(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """``earthsynth synthesize``: fill a ``SyntheticBank`` with ``Trainer.predict``.

    The YAML (``--config``) names the ``model`` (a LightningModule whose ``predict_step``
    returns ``image``/``mask``/``key``/``seed``, e.g. ``EarthSynthControlNet`` with
    ``ckpt_path``, or ``SynthesizerModule`` for a diffusers export), ``data``
    (:class:`~torchgeo_earthsynth.datamodules.MaskPromptDataModule`), ``bank``
    (:class:`~torchgeo_earthsynth.lightning_modules.BankWriter`: root, split, rfilter) and
    ``trainer`` (accelerator, devices, strategy...). A rerun skips the keys already banked.

    Args:
        argv: arguments after ``synthesize`` (e.g. ``['--config', 'configs/x.yaml']``;
            default ``sys.argv[1:]``).

    Returns:
        The run summary on global rank 0 (also in ``<bank>/<split>/summary.json``), else None.
    """
    import lightning.pytorch as pl

    from .datamodules.mask_prompt import MaskPromptDataModule
    from .lightning_modules.synthesizer import BankWriter

    args = list(sys.argv[1:] if argv is None else argv)
    # LightningCLI warns when it gets args while sys.argv holds others (`earthsynth
    # synthesize ...`); hide them while parsing only: DDP's launcher re-runs sys.argv.
    saved, sys.argv = sys.argv, sys.argv[:1]
    try:
        cli = SynthesizeCLI(
            model_class=pl.LightningModule,
            subclass_mode_model=True,
            datamodule_class=MaskPromptDataModule,
            run=False,
            args=args,
            seed_everything_default=0,
            save_config_callback=None,
            trainer_defaults={
                'logger': False,
                'enable_checkpointing': False,
                'enable_model_summary': False,
            },
            parser_kwargs={'prog': 'earthsynth synthesize', 'description': synthesize.__doc__},
        )
    finally:
        sys.argv = saved
    ckpt_path = cli.config.get('ckpt_path')
    cli.trainer.predict(
        cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path, return_predictions=False
    )
    callbacks: list[pl.Callback] = cli.trainer.callbacks  # type: ignore[attr-defined]
    writer = next(c for c in callbacks if isinstance(c, BankWriter))
    summary: dict[str, Any] | None = getattr(writer, 'summary', None)
    if cli.trainer.is_global_zero and summary is not None:
        print(
            f'bank {summary["bank"]}: wrote {summary["written"]}, dropped '
            f'{summary["dropped"]} {summary["dropped_by"] or ""}, skipped '
            f'{summary["skipped_done"]} already done; '
            f'{summary["bank_size"]} in the bank'
        )
    return summary


__all__ = ('EXTRA_COMMANDS', 'SynthesizeCLI', 'lightning_main', 'main', 'synthesize')


if __name__ == '__main__':
    main()
