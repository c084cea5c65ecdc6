# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Data-efficiency experiment: downstream score against the number of real labelled scenes."""

from __future__ import annotations

import csv
import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
from matplotlib.figure import Figure

from torchgeo_earthsynth.evaluation.harness import (
    ExperimentConfig,
    ExperimentResult,
    RunResult,
    load_config,
    run_experiment,
)

_COLOURS: Final = {'real': '#4c72b0', 'real+synthetic': '#55a868', 'synthetic-only': '#dd8452'}


def budget_label(budget: int | None) -> str:
    """A budget as written in folder names and reports: its count, or ``all``.

    Args:
        budget: real training scenes, or None for all of them.

    Returns:
        The label.

    .. versionadded:: 0.1
    """
    return 'all' if budget is None else str(budget)


def _t_quantile(df: int, p: float = 0.975) -> float:
    """Student's t quantile by bisection on its CDF (Simpson's rule; no SciPy needed)."""
    scale = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def cdf(x: float) -> float:
        grid = np.linspace(0.0, x, 2001)
        pdf = scale * (1 + grid**2 / df) ** (-(df + 1) / 2)
        h = x / 2000
        area = h / 3 * (pdf[0] + pdf[-1] + 4 * pdf[1:-1:2].sum() + 2 * pdf[2:-1:2].sum())
        return 0.5 + float(area)

    low, high = 0.0, 1000.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < p else (low, mid)
    return (low + high) / 2


def interval95(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval of the mean.

    Args:
        values: the sample (e.g. per-seed scores or paired differences).

    Returns:
        Mean, lower and upper bound (the bounds are NaN for fewer than two values).

    Raises:
        ValueError: if ``values`` is empty.

    .. versionadded:: 0.1
    """
    if not len(values):
        raise ValueError('interval95 needs at least one value')
    array = np.asarray(values, dtype=np.float64)
    mean = float(array.mean())
    if len(array) < 2:
        return mean, float('nan'), float('nan')
    t = _t_quantile(len(array) - 1)
    half = t * float(array.std(ddof=1)) / math.sqrt(len(array))
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class BudgetRow:
    """One arm at one real-label budget: its score and its paired difference to ``real``.

    Attributes:
        budget: real training scenes asked (None: all of them).
        real_samples: real training scenes of the ``real`` arm at this budget.
        train_samples: training samples the runs had (the bank's size for synthetic-only).
        arm: the arm.
        n: number of seeds.
        mean: mean score; ``low``/``high`` its 95% interval.
        low: lower bound of the 95% interval of the mean.
        high: upper bound of the 95% interval of the mean.
        diff: mean paired difference to ``real`` at the same budget and seed (None for real).
        diff_low: lower bound of its 95% interval.
        diff_high: upper bound of its 95% interval.
        wins: seeds where the arm beat ``real``.

    .. versionadded:: 0.1
    """

    budget: int | None
    real_samples: int
    train_samples: int
    arm: str
    n: int
    mean: float
    low: float
    high: float
    diff: float | None = None
    diff_low: float | None = None
    diff_high: float | None = None
    wins: int | None = None

    @property
    def verdict(self) -> str:
        """``helps``/``hurts`` when the paired 95% interval excludes 0, else ``unclear``."""
        if self.diff_low is None or self.diff_high is None or np.isnan(self.diff_low):
            return ''
        if self.diff_low > 0:
            return 'helps'
        return 'hurts' if self.diff_high < 0 else 'unclear'


@dataclass
class DataEfficiencyResult:
    """Every experiment of a data-efficiency study and its rows per budget and arm.

    .. versionadded:: 0.1
    """

    metric: str
    experiments: dict[int | None, ExperimentResult]
    synthetic_only: ExperimentResult | None
    rows: list[BudgetRow]
    files: dict[str, Path] = field(default_factory=dict)

    def format_table(self) -> str:
        """The rows as a Markdown table.

        Returns:
            One line per budget and arm: mean [95% CI], paired difference [95% CI], wins.
        """
        lines = [
            f'| real scenes | arm | n | {self.metric} [95% CI] | diff vs real [95% CI] '
            '| wins | verdict |',
            '|---:|---|---:|---|---|---:|---|',
        ]
        for r in self.rows:
            diff = wins = ''
            if r.diff is not None:
                diff = f'{r.diff:+.3f} [{r.diff_low:+.3f}, {r.diff_high:+.3f}]'
                wins = f'{r.wins}/{r.n}'
            budget = str(r.real_samples)
            if r.arm == 'synthetic-only':
                budget += f' (trains on {r.train_samples} synthetic)'
            lines.append(
                f'| {budget} | {r.arm} | {r.n} | {r.mean:.3f} [{r.low:.3f}, {r.high:.3f}] '
                f'| {diff} | {wins} | {r.verdict} |'
            )
        return '\n'.join(lines)

    def per_class(self) -> list[dict[str, Any]]:
        """Mean test IoU of each class over seeds, per budget and arm.

        Returns:
            One row per budget and arm: ``real scenes``, ``arm`` and one column per class
            (NaN where a class is in no test mask).
        """
        rows: list[dict[str, Any]] = []
        experiments = list(self.experiments.values())
        if self.synthetic_only is not None:
            experiments.append(self.synthetic_only)
        for experiment in experiments:
            for arm in dict.fromkeys(r.arm for r in experiment.runs):
                runs = [r for r in experiment.runs if r.arm == arm and r.per_class_iou]
                if not runs:
                    continue
                names = list(runs[0].per_class_iou or {})
                iou = np.array([[(r.per_class_iou or {})[n] for n in names] for r in runs])
                with warnings.catch_warnings():  # a class absent from every test mask: NaN
                    warnings.simplefilter('ignore', RuntimeWarning)
                    means = np.nanmean(iou, axis=0)
                real = [r.train_samples for r in experiment.runs if r.arm == 'real']
                rows.append(
                    {
                        'real scenes': real[0] if real else 0,
                        'arm': arm,
                        **dict(zip(names, means.tolist())),
                    }
                )
        return rows


def _rows(
    budget: int | None, runs: Sequence[RunResult], only: Sequence[RunResult]
) -> list[BudgetRow]:
    real = {r.seed: r.value for r in runs if r.arm == 'real'}
    real_samples = next((r.train_samples for r in runs if r.arm == 'real'), 0)
    rows = []
    for arm in ('real', 'real+synthetic', 'synthetic-only'):
        arm_runs = [r for r in (only if arm == 'synthetic-only' else runs) if r.arm == arm]
        if not arm_runs:
            continue
        mean, low, high = interval95([r.value for r in arm_runs])
        paired: dict[str, Any] = {}
        diffs = [r.value - real[r.seed] for r in arm_runs if r.seed in real]
        if arm != 'real' and diffs:
            diff, diff_low, diff_high = interval95(diffs)
            paired = {
                'diff': diff,
                'diff_low': diff_low,
                'diff_high': diff_high,
                'wins': sum(d > 0 for d in diffs),
            }
        rows.append(
            BudgetRow(
                budget,
                real_samples or arm_runs[0].train_samples,
                arm_runs[0].train_samples,
                arm,
                len(arm_runs),
                mean,
                low,
                high,
                **paired,
            )
        )
    return rows


def plot_data_efficiency(result: DataEfficiencyResult) -> Figure:
    """Score and paired difference to ``real`` against the real training scenes.

    Args:
        result: the study.

    Returns:
        A matplotlib Figure (not attached to pyplot): the mean with its 95% interval per
        arm (synthetic-only, which uses no real scene, as a dashed band), and the paired
        differences with their 95% intervals.

    .. versionadded:: 0.1
    """
    fig = Figure(figsize=(11, 4.2), layout='constrained')
    score, gain = fig.subplots(1, 2)
    for arm in ('real', 'real+synthetic', 'synthetic-only'):
        rows = [r for r in result.rows if r.arm == arm]
        if not rows:
            continue
        colour = _COLOURS[arm]
        x = np.array([r.real_samples for r in rows], dtype=float)
        if arm == 'synthetic-only':  # no real scene: one level across the axis
            label = f'{arm} ({rows[0].train_samples} synthetic)'
            score.axhline(rows[0].mean, color=colour, ls='--', label=label)
            score.axhspan(rows[0].low, rows[0].high, color=colour, alpha=0.15)
        else:
            score.plot(x, [r.mean for r in rows], marker='o', color=colour, label=arm)
            score.fill_between(
                x, [r.low for r in rows], [r.high for r in rows], color=colour, alpha=0.2
            )
        paired = [r for r in rows if r.diff is not None]
        if paired:
            nudge = 1.04 if arm == 'synthetic-only' else 1.0  # keep the bars apart
            diff = np.array([r.diff for r in paired], dtype=float)
            low = np.array([r.diff_low for r in paired], dtype=float)
            high = np.array([r.diff_high for r in paired], dtype=float)
            gain.errorbar(
                np.array([r.real_samples for r in paired], dtype=float) * nudge,
                diff,
                yerr=np.nan_to_num(np.stack([diff - low, high - diff])),
                marker='o',
                capsize=4,
                color=colour,
                label=f'{arm} - real',
            )
    gain.axhline(0.0, color='black', lw=0.8)
    ticks = sorted({r.real_samples for r in result.rows})
    for ax in (score, gain):
        ax.set_xscale('log', base=2)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel('real labelled training scenes')
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize='small')
    score.set_ylabel(result.metric)
    score.set_ylim(bottom=max(0.0, score.get_ylim()[0]))  # scores are >= 0
    score.set_title('test score: mean and 95% interval over seeds', fontsize='medium')
    gain.set_ylabel(f'paired difference in {result.metric}')
    gain.set_title('difference to real-only (same seed), 95% interval', fontsize='medium')
    return fig


def write_data_efficiency(result: DataEfficiencyResult, folder: str | Path) -> dict[str, Path]:
    """Write ``data_efficiency.csv``, ``data_efficiency.md`` and ``data_efficiency.png``.

    Args:
        result: the study.
        folder: the output folder.

    Returns:
        The written files by kind (``csv``, ``table``, ``plot``).

    .. versionadded:: 0.1
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        'csv': folder / 'data_efficiency.csv',
        'table': folder / 'data_efficiency.md',
        'plot': folder / 'data_efficiency.png',
    }
    names = [f.name for f in dataclasses.fields(BudgetRow)]
    with files['csv'].open('w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow([*names, 'verdict'])
        for row in result.rows:
            values = dataclasses.astuple(row)
            writer.writerow(['' if v is None else v for v in values] + [row.verdict])
    files['table'].write_text(result.format_table() + '\n')
    plot_data_efficiency(result).savefig(files['plot'], dpi=110)
    return files


def run_data_efficiency(
    config: ExperimentConfig | Mapping[str, Any] | str | Path, budgets: Sequence[int | None]
) -> DataEfficiencyResult:
    """Run an experiment per real-label budget (same seeds: paired), then compare the arms.

    Each budget runs ``real`` and ``real+synthetic`` (those of ``config.arms``) with
    ``train_subset`` set to it, in ``<output>/budget_<n>``; ``synthetic-only`` uses no real
    scene, so it runs once (``<output>/synthetic_only``) and is paired with ``real`` at each
    budget. The test split is the datamodule's, the same for every run.

    Args:
        config: the experiment (its ``train_subset`` is replaced by each budget).
        budgets: real training scenes per run; None means all of them.

    Returns:
        The :class:`DataEfficiencyResult` (also written to ``config.output``).

    Raises:
        ValueError: if ``budgets`` is empty, lists a budget twice or one below 1, or the
            config is invalid.

    .. versionadded:: 0.1
    """
    config = dataclasses.replace(load_config(config), budgets=list(budgets))  # checks them
    output = Path(config.output)
    arms = list(config.arms or ())
    real_arms = [a for a in arms if a != 'synthetic-only']
    experiments: dict[int | None, ExperimentResult] = {}
    synthetic_only = None
    if 'synthetic-only' in arms:
        synthetic_only = run_experiment(
            dataclasses.replace(
                config, arms=['synthetic-only'], output=str(output / 'synthetic_only')
            )
        )
    only = synthetic_only.runs if synthetic_only is not None else []
    rows: list[BudgetRow] = []
    for budget in budgets:
        label = budget_label(budget)
        experiment = run_experiment(
            dataclasses.replace(
                config,
                arms=real_arms,
                train_subset=budget,
                output=str(output / f'budget_{label}'),
            )
        )
        experiments[budget] = experiment
        rows += _rows(budget, experiment.runs, only)
    result = DataEfficiencyResult(config.metric_name, experiments, synthetic_only, rows)
    result.files = write_data_efficiency(result, output)
    return result


__all__ = (
    'BudgetRow',
    'DataEfficiencyResult',
    'budget_label',
    'interval95',
    'plot_data_efficiency',
    'run_data_efficiency',
    'write_data_efficiency',
)
