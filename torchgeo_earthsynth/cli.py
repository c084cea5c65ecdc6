# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The ``earthsynth`` command: TorchGeo's LightningCLI plus our extra subcommands."""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Final

#: Extra subcommands, each ``module:function`` taking the remaining argv.
EXTRA_COMMANDS: Final[dict[str, str]] = {
    'build-corpus': 'torchgeo_earthsynth.corpus_builder:main',
    'demo': 'torchgeo_earthsynth.demo:main',
    'evaluate': 'torchgeo_earthsynth.evaluation:main',
    'synthesize': 'torchgeo_earthsynth.bank:main',
}


def lightning_main(args: Sequence[str] | None = None) -> None:
    """``fit|validate|test|predict``: TorchGeo's LightningCLI with our classes registered.

    Args:
        args: command-line arguments (default ``sys.argv[1:]``).
    """
    from lightning.pytorch.cli import LightningCLI

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


if __name__ == '__main__':
    main()
