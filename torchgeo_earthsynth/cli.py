# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The ``earthsynth`` command: TorchGeo's LightningCLI plus our extra subcommands."""

from __future__ import annotations

import argparse
import difflib
import importlib
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

#: Extra subcommands, each ``module:function`` taking the remaining argv.
EXTRA_COMMANDS: Final[dict[str, str]] = {
    'build-corpus': 'torchgeo_earthsynth.corpus.cli:main',
    'demo': 'torchgeo_earthsynth.demo.run:main',
    'evaluate': 'torchgeo_earthsynth.evaluation.cli:main',
    'benchmark': 'torchgeo_earthsynth.evaluation.benchmark:main',
    'synthesize': 'torchgeo_earthsynth.cli:synthesize',
    'datasets': 'torchgeo_earthsynth.cli:datasets_main',
    'random-base': 'torchgeo_earthsynth.cli:random_base_main',
}

#: Every subcommand with one line of help, as ``earthsynth --help`` lists them.
COMMANDS: Final[dict[str, str]] = {
    'fit': "train a model: TorchGeo's LightningCLI (e.g. --config configs/mini.yaml)",
    'validate': 'validate a model (LightningCLI)',
    'test': 'test a model (LightningCLI)',
    'predict': 'predict with a model (LightningCLI)',
    'demo': 'the whole loop on the bundled mini corpus, with a report (start here)',
    'build-corpus': 'cut scenes and masks into a corpus in the EarthSynth-180K layout',
    'synthesize': 'fill a synthetic bank with a trained generator (Trainer.predict)',
    'evaluate': 'train downstream tasks with and without synthetic data; report',
    'benchmark': 'generators on CLIP score, accuracy, SR PSNR/SSIM/FID; one table',
    'datasets': 'the TorchGeo datasets supported out of the box, and their encodings',
    'random-base': 'write SD 1.5 / SD 2.1 with random weights (real shapes, no download)',
}

#: ``random-base --arch`` choices: ``models.random_base.BASE_CONFIGS``'s keys, written out so
#: that ``--help`` need not import diffusers (tests/test_cli_imports.py checks they agree).
RANDOM_BASE_ARCHS: Final[tuple[str, ...]] = ('sd15', 'sd21')

_ROLE = re.compile(r':[a-z]+:`~?([^`<]*?)\s*(?:<[^>]*>)?`')


def plain(text: str) -> str:
    """Help text without Sphinx markup: roles become their target's name, literals plain.

    Args:
        text: text from a docstring, e.g. ``"fill a :class:`~a.SyntheticBank` (``root``)"``.

    Returns:
        E.g. ``"fill a SyntheticBank (root)"``.
    """

    def name(match: re.Match[str]) -> str:
        target = match.group(1)
        whole = match.group(0)
        return target.rsplit('.', 1)[-1] if '`~' in whole else target

    return _ROLE.sub(name, text).replace('``', '')


@contextmanager
def _plain_help() -> Iterator[None]:
    """Strip Sphinx markup from every help message printed meanwhile.

    Subcommand parsers take their help from docstrings (jsonargparse, LightningCLI), which
    are written for Sphinx; all argparse help goes through ``HelpFormatter.format_help``.
    """
    original = argparse.HelpFormatter.format_help

    def format_help(self: argparse.HelpFormatter) -> str:
        return plain(original(self))

    argparse.HelpFormatter.format_help = format_help  # type: ignore[method-assign]
    try:
        yield
    finally:
        argparse.HelpFormatter.format_help = original  # type: ignore[method-assign]


def overview() -> str:
    """What ``earthsynth --help`` prints: every subcommand with one line.

    Returns:
        The help text.
    """
    width = max(map(len, COMMANDS))
    lines = [f'  {command:<{width}}  {what}' for command, what in COMMANDS.items()]
    return (
        'usage: earthsynth <command> [options]\n\n'
        'EarthSynth-style generative data augmentation for TorchGeo.\n\n'
        'commands:\n' + '\n'.join(lines) + '\n\n'
        "Run 'earthsynth <command> --help' for a command's options.\n"
    )


def datasets_main(args: Sequence[str] | None = None) -> None:
    """``earthsynth datasets [NAME ...]``: the registered datasets and their encodings.

    Args:
        args: dataset names to describe (default: list them all).
    """
    parser = argparse.ArgumentParser(
        prog='earthsynth datasets',
        description='TorchGeo datasets SyntheticAugmentation(dataset=NAME) knows: the value '
        'of each class in masks or labels, no-data values, the vocabulary class each maps to, '
        'and the image bands and pixel range.',
    )
    parser.add_argument('names', nargs='*', help='datasets to describe (default: list all)')
    names = parser.parse_args(args).names
    # after parsing: the encodings import TorchGeo, which `--help` does not need
    from torchgeo_earthsynth.encodings.registry import ENCODINGS, encoding_for
    from torchgeo_earthsynth.vocabulary import VOCABULARY

    if not names:
        for name, enc in ENCODINGS.items():
            size = f'{len(enc.classes)} classes'
            print(f'{name:<20} {enc.task:<15} {size:>11}, {enc.describe_image()}')
        return
    for name in names:
        try:
            enc = encoding_for(name)
        except ValueError as error:
            parser.error(str(error))
        print(f'{enc.name} ({enc.task}): {enc.describe_image()}')
        rgb = 'none (no true-colour bands)' if enc.rgb is None else enc.rgb
        path = f'; RGB only: {enc.rgb_path}' if enc.rgb_path else ''
        print(f'  RGB band indices: {rgb}{path}')
        for cls, value, vocab in zip(enc.classes, enc.values, enc.vocabulary):
            note = ' (no-data)' if value in enc.ignore else ''
            print(f'  {value:>3}  {cls:<24} -> {VOCABULARY[vocab]}{note}')
        if enc.notes:
            print(f'  note: {enc.notes}')


def random_base_main(args: Sequence[str] | None = None) -> None:
    """``earthsynth random-base --arch sd15|sd21 --out DIR``: a random-weight SD base.

    Args:
        args: command-line arguments after ``random-base``.
    """
    parser = argparse.ArgumentParser(
        prog='earthsynth random-base',
        description='Write a Stable Diffusion base with the published architecture (configs '
        'of the hub folders) and random weights, as a diffusers folder: for trying the '
        'paper-scale configs (base_model: DIR) offline. Its images are noise.',
    )
    parser.add_argument('--arch', choices=RANDOM_BASE_ARCHS, default='sd15')
    parser.add_argument('--out', required=True, help='folder to write (replaced)')
    parser.add_argument(
        '--dtype',
        choices=('float16', 'bfloat16', 'float32'),
        default='float16',
        help='weights on disk (float16: 2.1 GB for sd15, as the hub fp16 variant)',
    )
    parser.add_argument('--seed', type=int, default=0)
    opts = parser.parse_args(args)
    # after parsing: diffusers and torch take seconds to import, `--help` needs neither
    import torch

    from torchgeo_earthsynth.models.random_base import random_base

    out = random_base(opts.arch, opts.out, getattr(torch, opts.dtype), opts.seed)
    print(f'wrote {opts.arch} with random weights to {out}')


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
    from torchgeo_earthsynth.lightning_cli import EarthSynthCLI

    EarthSynthCLI(
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
    if not argv or argv[0] in ('-h', '--help'):
        print(overview(), end='')
        raise SystemExit(0 if argv else 2)
    command = argv[0]
    if not command.startswith('-') and command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ''
        sys.stderr.write(f"earthsynth: unknown command '{command}'{hint}\n\n{overview()}")
        raise SystemExit(2)
    with _plain_help():
        if command in EXTRA_COMMANDS:
            _resolve(EXTRA_COMMANDS[command])(argv[1:])
        else:  # LightningCLI reads sys.argv itself when given no args
            lightning_main(None if args is None else argv)


#: ``earthsynth synthesize --help``'s description.
SYNTHESIZE_HELP: Final[str] = (
    'Fill a synthetic bank with Trainer.predict. The YAML (--config) names the model (e.g. '
    'EarthSynthControlNet with --ckpt_path, or SynthesizerModule for a diffusers export), '
    'data (MaskPromptDataModule: the masks and prompts to synthesise from), bank (BankWriter: '
    'root, split, rfilter) and trainer (accelerator, devices, strategy...). A rerun skips the '
    'keys already banked. A model without trained weights is refused unless --allow-untrained.'
)


def _refuse_untrained(config: Any, ckpt_path: str | None) -> None:
    """Stop before synthesising from a model with no trained weights, unless allowed.

    Raises:
        SystemExit: naming the ways to give weights.
    """
    if ckpt_path is not None or config.get('allow_untrained'):
        return
    init = config.get('model', {}).get('init_args', {}) or {}
    if any(init.get(key) for key in ('pretrained', 'controlnet')):
        return
    sys.stderr.write(
        'earthsynth synthesize: the model has no trained weights (no --ckpt_path, no '
        'pretrained or controlnet weights), so it would write noise into the bank. Give '
        '--ckpt_path <last.ckpt> (e.g. from earthsynth fit), a SynthesizerModule with '
        'pretrained=<export or hub id>, or --allow-untrained to synthesise anyway.\n'
    )
    raise SystemExit(2)


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

    from torchgeo_earthsynth.datamodules.mask_prompt import MaskPromptDataModule
    from torchgeo_earthsynth.lightning_cli import SynthesizeCLI
    from torchgeo_earthsynth.lightning_modules.synthesizer import BankWriter

    args = list(sys.argv[1:] if argv is None else argv)
    # LightningCLI warns when it gets args while sys.argv holds others (`earthsynth
    # synthesize ...`); hide them while parsing only: DDP's launcher re-runs sys.argv.
    saved, sys.argv = sys.argv, sys.argv[:1]
    try:
        cli = SynthesizeCLI(
            model_class=pl.LightningModule,
            subclass_mode_model=True,
            datamodule_class=MaskPromptDataModule,
            subclass_mode_data=True,
            run=False,
            args=args,
            seed_everything_default=0,
            save_config_callback=None,
            trainer_defaults={
                'logger': False,
                'enable_checkpointing': False,
                'enable_model_summary': False,
            },
            parser_kwargs={'prog': 'earthsynth synthesize', 'description': SYNTHESIZE_HELP},
            auto_configure_optimizers=False,  # predicting: no optimizer options to offer
        )
    finally:
        sys.argv = saved
    ckpt_path = cli.config.get('ckpt_path')
    _refuse_untrained(cli.config, ckpt_path)
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


def __getattr__(name: str) -> Any:
    """``SynthesizeCLI`` from its module, imported on use: Lightning is slow to import."""
    if name == 'SynthesizeCLI':
        from torchgeo_earthsynth.lightning_cli import SynthesizeCLI

        return SynthesizeCLI
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = (
    'EXTRA_COMMANDS',
    'lightning_main',
    'main',
    'random_base_main',
    'synthesize',
)


if __name__ == '__main__':
    main()
