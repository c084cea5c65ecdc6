# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Downstream experiment report: results.json, CSV tables and plots."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from torchgeo_earthsynth.evaluation.results import ExperimentResult, RunResult


def plot_summary(result: ExperimentResult) -> Figure:
    """Bar plot of each arm's mean metric, std error bars and the per-seed values.

    Args:
        result: the experiment result.

    Returns:
        A matplotlib Figure (not attached to pyplot).

    .. versionadded:: 0.1
    """
    summaries = list(result.summary.values())
    fig = Figure(figsize=(max(4.5, 1.8 + 1.6 * len(summaries)), 4), layout='constrained')
    ax = fig.add_subplot()
    x = np.arange(len(summaries))
    colours = {'real': '#4c72b0', 'real+synthetic': '#55a868', 'synthetic-only': '#dd8452'}
    ax.bar(
        x,
        [s.mean for s in summaries],
        yerr=[s.std or 0.0 for s in summaries],
        capsize=6,
        color=[colours.get(s.arm, '#8172b2') for s in summaries],
        alpha=0.85,
    )
    for i, s in enumerate(summaries):
        values = [r.value for r in result.runs if r.arm == s.arm]
        ax.scatter(np.full(len(values), x[i]), values, color='black', s=12, zorder=3)
        if s.diff is not None and s.arm != 'real':
            ax.annotate(
                f'{s.diff:+.3f}',
                (x[i], s.mean + (s.std or 0.0)),
                ha='center',
                va='bottom',
                xytext=(0, 4),
                textcoords='offset points',
            )
    ax.set_xticks(x, [f'{s.arm}\n(n={s.n})' for s in summaries])
    ax.set_ylabel(result.metric)
    top = max(max(s.mean + (s.std or 0.0) for s in summaries), 1e-6)
    ax.set_ylim(0, min(1.0, top * 1.2) if top <= 1.0 else top * 1.2)
    ax.set_title(
        f'{result.config.task}: {result.metric}\nmean ± std over seeds, diff vs real above bars',
        fontsize='medium',
    )
    return fig


def learning_curve(run: RunResult, column: str = 'train_loss') -> tuple[np.ndarray, np.ndarray]:
    """A logged metric of a run against the step, read from its ``metrics.csv``.

    Args:
        run: the run.
        column: the logged metric (``train_loss``, ``val_loss``...).

    Returns:
        Steps and values (empty arrays if the column was never logged).

    .. versionadded:: 0.1
    """
    steps: list[float] = []
    values: list[float] = []
    with (run.folder / 'metrics.csv').open(newline='') as f:
        for row in csv.DictReader(f):
            if row.get(column):
                steps.append(float(row['step']))
                values.append(float(row[column]))
    return np.array(steps), np.array(values)


def plot_learning_curves(runs: Sequence[RunResult]) -> Figure:
    """Training loss (smoothed) and validation loss against the step, one colour per arm.

    Args:
        runs: the runs (each seed a thin line; training loss smoothed over 10 steps).

    Returns:
        A matplotlib Figure (not attached to pyplot).

    .. versionadded:: 0.1
    """
    fig = Figure(figsize=(10, 4), layout='constrained')
    axes = fig.subplots(1, 2)
    colours = {'real': '#4c72b0', 'real+synthetic': '#55a868', 'synthetic-only': '#dd8452'}
    labelled: set[tuple[int, str]] = set()
    for run in runs:
        for i, column in enumerate(('train_loss', 'val_loss')):
            steps, values = learning_curve(run, column)
            if not len(values):
                continue
            if column == 'train_loss' and len(values) >= 10:
                values = np.convolve(values, np.ones(10) / 10, mode='valid')
                steps = steps[9:]
            first = (i, run.arm) not in labelled
            labelled.add((i, run.arm))
            axes[i].plot(
                steps,
                values,
                color=colours.get(run.arm, '#8172b2'),
                alpha=0.7,
                lw=1,
                label=run.arm if first else None,
            )
    for ax, title in zip(axes, ('training loss (mean of 10 steps)', 'validation loss')):
        ax.set_title(title)
        ax.set_xlabel('step')
        ax.set_yscale('log')
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle('learning curves, one line per seed')
    return fig


def write_report(result: ExperimentResult, folder: str | Path) -> dict[str, Path]:
    """Write ``results.json``, ``runs.csv``, ``summary.csv`` and ``results.png``.

    Args:
        result: the experiment result.
        folder: the output folder.

    Returns:
        The written files by kind (``json``, ``runs_csv``, ``summary_csv``, ``plot``,
        ``curves``).

    .. versionadded:: 0.1
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        'json': folder / 'results.json',
        'runs_csv': folder / 'runs.csv',
        'summary_csv': folder / 'summary.csv',
        'plot': folder / 'results.png',
    }

    # JSON has no NaN: write null
    payload = json.loads(json.dumps(result.to_dict(), default=str), parse_constant=lambda _: None)
    files['json'].write_text(json.dumps(payload, indent=2) + '\n')

    # one IoU definition in the table: TorchGeo's micro one stays in results.json only
    unreported = {'test_MulticlassJaccardIndex'} if result.metric == 'test_mIoU' else set()
    reported = {result.metric}  # already the third column
    metric_keys = sorted({k for run in result.runs for k in run.metrics} - unreported - reported)
    stat_keys = sorted({k for run in result.runs for k in run.synthetic_stats or {}})
    with files['runs_csv'].open('w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                'arm',
                'seed',
                result.metric,
                'train_samples',
                'steps',
                'seconds',
                *metric_keys,
                *(f'synthetic_{k}' for k in stat_keys),
            ]
        )
        for run in result.runs:
            stats = run.synthetic_stats or {}
            writer.writerow(
                [
                    run.arm,
                    run.seed,
                    run.value,
                    run.train_samples,
                    run.steps,
                    round(run.seconds, 3),
                    *(run.metrics.get(k) for k in metric_keys),
                    *(stats.get(k, '') for k in stat_keys),
                ]
            )
    with files['summary_csv'].open('w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                'arm',
                'metric',
                'n',
                'mean',
                'std',
                'diff_vs_real',
                'paired_diff_mean',
                'paired_diff_std',
                'wins',
            ]
        )
        for s in result.summary.values():
            paired_mean = float(np.mean(list(s.paired_diffs.values()))) if s.paired_diffs else None
            writer.writerow(
                [
                    '' if v is None else v
                    for v in (
                        s.arm,
                        result.metric,
                        s.n,
                        s.mean,
                        s.std,
                        s.diff,
                        paired_mean,
                        s.paired_diff_std,
                        s.wins,
                    )
                ]
            )
    fig = plot_summary(result)
    fig.savefig(files['plot'], dpi=120)
    files['curves'] = folder / 'learning_curves.png'
    plot_learning_curves(result.runs).savefig(files['curves'], dpi=110)
    return files


__all__ = (
    'learning_curve',
    'plot_learning_curves',
    'plot_summary',
    'write_report',
)
