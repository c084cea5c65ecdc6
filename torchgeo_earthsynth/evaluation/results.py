# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Downstream experiment results: runs, per-arm summaries and their table."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchgeo_earthsynth.evaluation.config import ExperimentConfig


@dataclass(frozen=True)
class RunResult:
    """One trained and tested model.

    Attributes:
        arm: the arm.
        seed: the seed.
        value: the reported metric.
        metrics: every logged test metric.
        train_samples: size of the training set (after ``train_subset``).
        synthetic_stats: counters of the synthetic augmentation (``real+synthetic``), else
            None.
        seconds: wall time of fit and test.
        folder: the run's log folder.
        steps: optimizer steps actually run (the trainer's final ``global_step``).
        per_class_iou: test IoU per class name (multiclass segmentation), NaN for a class
            absent from the test split and never predicted; else None.

    .. versionadded:: 0.1
    """

    arm: str
    seed: int
    value: float
    metrics: dict[str, float]
    train_samples: int
    synthetic_stats: dict[str, int] | None
    seconds: float
    folder: Path
    steps: int = 0
    per_class_iou: dict[str, float] | None = None


@dataclass(frozen=True)
class ArmSummary:
    """An arm's metric over seeds, and its difference to the ``real`` arm.

    Attributes:
        arm: the arm.
        n: number of runs (seeds).
        mean: mean of the metric.
        std: sample standard deviation (``ddof=1``); None for a single run.
        diff: ``mean`` minus the ``real`` arm's mean; None without a ``real`` arm.
        paired_diffs: per seed, this arm's value minus the ``real`` arm's (same seed).
        paired_diff_std: sample standard deviation of ``paired_diffs``; None for fewer
            than two.
        wins: seeds where this arm beat ``real``.

    .. versionadded:: 0.1
    """

    arm: str
    n: int
    mean: float
    std: float | None
    diff: float | None
    paired_diffs: dict[int, float]
    paired_diff_std: float | None
    wins: int


@dataclass
class ExperimentResult:
    """All runs of an experiment, their summary per arm, and the files written.

    .. versionadded:: 0.1
    """

    config: ExperimentConfig
    metric: str
    runs: list[RunResult]
    summary: dict[str, ArmSummary]
    files: dict[str, Path] = field(default_factory=dict)

    def value(self, arm: str, seed: int) -> float:
        """The metric of one run.

        Args:
            arm: the arm.
            seed: the seed.

        Returns:
            The reported metric.

        Raises:
            KeyError: if there is no such run.
        """
        for run in self.runs:
            if run.arm == arm and run.seed == seed:
                return run.value
        raise KeyError(f'no run for arm {arm!r} and seed {seed}')

    def format_table(self) -> str:
        """The summary as a plain-text table.

        Returns:
            One line per arm: mean ± std, difference to ``real`` and the paired difference.
        """
        lines = [
            f'{"arm":<16} {"n":>2}  {self.metric:>24}  {"diff vs real":>12}  '
            f'{"paired diff (wins)":>22}'
        ]
        for s in self.summary.values():
            spread = f' ± {s.std:.4f}' if s.std is not None else ''
            diff = f'{s.diff:+.4f}' if s.diff is not None and s.arm != 'real' else ''
            paired = ''
            if s.paired_diffs and s.arm != 'real':
                paired_mean = float(np.mean(list(s.paired_diffs.values())))
                paired_spread = f' ± {s.paired_diff_std:.4f}' if s.paired_diff_std else ''
                paired = f'{paired_mean:+.4f}{paired_spread} ({s.wins}/{len(s.paired_diffs)})'
            lines.append(
                f'{s.arm:<16} {s.n:>2}  {f"{s.mean:.4f}{spread}":>24}  {diff:>12}  {paired:>22}'
            )
        return '\n'.join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: config, metric, runs and summary.

        Returns:
            The dict written to ``results.json``.
        """
        return {
            'task': self.config.task,
            'metric': self.metric,
            'config': dataclasses.asdict(self.config),
            'runs': [{**dataclasses.asdict(run), 'folder': str(run.folder)} for run in self.runs],
            'summary': {
                arm: {
                    **dataclasses.asdict(s),
                    'paired_diffs': {str(k): v for k, v in s.paired_diffs.items()},
                }
                for arm, s in self.summary.items()
            },
            'versions': _versions(),
        }


def _versions() -> dict[str, str]:
    import lightning
    import torchgeo

    return {
        'torch': torch.__version__,
        'torchgeo': torchgeo.__version__,
        'lightning': lightning.__version__,
    }


def summarize(runs: Sequence[RunResult], arms: Sequence[str]) -> dict[str, ArmSummary]:
    """Mean, spread and difference to ``real`` of each arm.

    Args:
        runs: the runs.
        arms: the arms, in report order.

    Returns:
        Per arm (those with runs), its :class:`ArmSummary`.

    .. versionadded:: 0.1
    """
    by_arm = {arm: {r.seed: r.value for r in runs if r.arm == arm} for arm in arms}
    real = by_arm.get('real') or {}
    real_mean = float(np.mean(list(real.values()))) if real else None
    out: dict[str, ArmSummary] = {}
    for arm, values in by_arm.items():
        if not values:
            continue
        array = np.array(list(values.values()), dtype=np.float64)
        paired = {s: v - real[s] for s, v in values.items() if s in real}
        diffs = np.array(list(paired.values()), dtype=np.float64)
        out[arm] = ArmSummary(
            arm=arm,
            n=len(array),
            mean=float(array.mean()),
            std=float(array.std(ddof=1)) if len(array) > 1 else None,
            diff=float(array.mean()) - real_mean if real_mean is not None else None,
            paired_diffs=paired,
            paired_diff_std=float(diffs.std(ddof=1)) if len(diffs) > 1 else None,
            wins=int((diffs > 0).sum()),
        )
    return out


__all__ = (
    'ArmSummary',
    'ExperimentResult',
    'RunResult',
    'summarize',
)
