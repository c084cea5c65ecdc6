# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""``earthsynth evaluate``: one experiment, or its data-efficiency study over budgets."""

from __future__ import annotations

from collections.abc import Sequence

from torchgeo_earthsynth.evaluation.config import _config_parser, _from_namespace
from torchgeo_earthsynth.evaluation.data_efficiency import run_data_efficiency
from torchgeo_earthsynth.evaluation.harness import run_experiment


def main(argv: Sequence[str] | None = None) -> None:
    """``earthsynth evaluate --config <yaml> [--field value ...]``.

    Args:
        argv: command-line arguments after ``evaluate``.

    .. versionadded:: 0.1
    """
    parser = _config_parser()
    parser.exit_on_error = True
    cfg = parser.parse_args(list(argv) if argv is not None else None)
    try:
        config = _from_namespace(cfg)
        if config.budgets is not None:
            study = run_data_efficiency(config, config.budgets)
            print(study.format_table())
            print(f'report: {study.files["table"].parent}')
            return
        result = run_experiment(config)
    except ValueError as error:
        parser.error(str(error))
    print(result.format_table())
    print(f'report: {result.files["json"].parent}')


__all__ = ('main',)
