# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The benchmark's rows, its table (CSV, markdown, JSON) and its plot."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from matplotlib import pyplot as plt
from torch import Tensor, nn

from torchgeo_earthsynth.atomic import atomic_write_text
from torchgeo_earthsynth.evaluation.data_efficiency import interval95
from torchgeo_earthsynth.evaluation.report import learning_curve
from torchgeo_earthsynth.evaluation.results import RunResult

__all__ = (
    'COLUMNS',
    'BenchmarkResult',
    'BenchmarkRow',
    'plot_classifier_curves',
    'random_features',
    'write_benchmark',
)

#: Metric columns: name, header, higher is better.
COLUMNS: Final = (
    ('clip_score', 'CLIP score', True),
    ('accuracy', 'accuracy (trained on it)', True),
    ('psnr_y', 'PSNR-Y (dB)', True),
    ('ssim_y', 'SSIM-Y', True),
    ('fid', 'FID', False),
)


@dataclass
class BenchmarkRow:
    """One method's measurements (None: not applicable, e.g. PSNR of real vs itself).

    ``samples`` holds what each mean is over: per held-out scene for ``clip_score``,
    ``psnr_y`` and ``ssim_y``, per seed for ``accuracy`` (the verdict's paired intervals).

    .. versionadded:: 0.3
    """

    method: str
    kind: str
    clip_score: float | None = None
    accuracy: float | None = None
    psnr_y: float | None = None
    ssim_y: float | None = None
    fid: float | None = None
    seconds: float = 0.0
    samples: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class BenchmarkResult:
    """Every row, the config and the settings that the numbers depend on.

    .. versionadded:: 0.3
    """

    rows: list[BenchmarkRow]
    config: dict[str, Any]
    scale: int
    bands: int
    crop_border: int
    files: dict[str, Path] = field(default_factory=dict)
    verdict: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        """The table in markdown (``-`` where a metric does not apply)."""
        headers = ['method', 'kind', *(header for _, header, _ in COLUMNS), 'seconds']
        lines = ['| ' + ' | '.join(headers) + ' |', '|' + '---|' * len(headers)]
        for row in self.rows:
            cells = [row.method, row.kind]
            for key, _, _ in COLUMNS:
                cells.append(_cell(getattr(row, key), row.samples.get(key, [])))
            cells.append(f'{row.seconds:.1f}')
            lines.append('| ' + ' | '.join(cells) + ' |')
        note = (
            f'\nx{self.scale} super-resolution from {self.bands} low-res bands; PSNR/SSIM on '
            f'BT.601 Y with {self.crop_border} px cropped per side; FID '
            f'({self.config["fid_feature"]} features) against the real held-out scenes '
            '(real row: training vs held-out real scenes); CLIP score '
            f'({self.config["clip_model"]}) against each scene prompt; accuracy: the '
            "harness classifier trained on the method's images of the training scenes, "
            'tested on real held-out scenes. Brackets: 95% t-interval of the mean over scenes '
            '(accuracy: over seeds). Seconds: rendering and measuring the row.\n'
        )
        verdict = '\n' + '\n'.join(self.verdict) + '\n' if self.verdict else ''
        return '\n'.join(lines) + '\n' + note + verdict

    def to_dict(self) -> dict[str, Any]:
        """Rows, settings and config as written into ``benchmark.json``."""
        return {
            'rows': [asdict(row) for row in self.rows],
            'verdict': self.verdict,
            'scale': self.scale,
            'bands': self.bands,
            'crop_border': self.crop_border,
            'config': self.config,
        }


def _cell(value: float | None, samples: Sequence[float]) -> str:
    """A mean, with its 95% interval where it is over more than one sample."""
    if value is None:
        return '-'
    if len(samples) < 2:
        return f'{value:.4g}'
    _, low, high = interval95(samples)
    return f'{value:.4g} [{low:.4g}, {high:.4g}]'


def write_benchmark(result: BenchmarkResult, folder: str | Path) -> dict[str, Path]:
    """Write ``benchmark.csv``, ``benchmark.md``, ``benchmark.json`` and ``benchmark.png``.

    Args:
        result: the benchmark result.
        folder: output folder (created).

    Returns:
        The files by kind (``csv``, ``markdown``, ``json``, ``plot``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        'csv': folder / 'benchmark.csv',
        'markdown': folder / 'benchmark.md',
        'json': folder / 'benchmark.json',
        'plot': folder / 'benchmark.png',
    }
    fields = ['method', 'kind', *(key for key, _, _ in COLUMNS), 'seconds']
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=fields, lineterminator='\n', extrasaction='ignore')
    writer.writeheader()
    for row in result.rows:
        writer.writerow({k: ('' if v is None else v) for k, v in asdict(row).items()})
    atomic_write_text(files['csv'], table.getvalue())
    atomic_write_text(files['markdown'], result.markdown())
    atomic_write_text(files['json'], json.dumps(result.to_dict(), indent=2, default=str))
    figure = plot_benchmark(result)
    figure.savefig(files['plot'], dpi=100, bbox_inches='tight')
    plt.close(figure)
    return files


def plot_benchmark(result: BenchmarkResult) -> Any:
    """One bar panel per metric, one bar per method (hatched where lower is better)."""
    fig, axes = plt.subplots(1, len(COLUMNS), figsize=(3.2 * len(COLUMNS), 3.6))
    names = [row.method for row in result.rows]
    for ax, (key, header, higher) in zip(axes, COLUMNS):
        values = [getattr(row, key) for row in result.rows]
        heights = [math.nan if v is None else v for v in values]
        ax.bar(range(len(names)), heights, color='C0' if higher else 'C3')
        ax.set_xticks(range(len(names)), names, rotation=45, ha='right', fontsize=8)
        ax.set_title(f'{header} ({"higher" if higher else "lower"} is better)', fontsize=9)
    fig.suptitle(f'x{result.scale} super-resolution and generation benchmark')
    fig.tight_layout()
    return fig


def plot_classifier_curves(runs: Mapping[str, Sequence[RunResult]]) -> Any:
    """Each row's classifier: training loss (smoothed over 10 steps) and validation accuracy.

    Args:
        runs: per benchmark row, its classifier runs (one per seed, each a thin line).

    Returns:
        A matplotlib figure: whether the classifiers converged.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout='constrained')
    for colour, (method, row_runs) in enumerate(runs.items()):
        for i, run in enumerate(row_runs):
            for ax, column in zip(axes, ('train_loss', 'val_OverallAccuracy')):
                steps, values = learning_curve(run, column)
                if column == 'train_loss' and len(values) >= 10:
                    values = np.convolve(values, np.ones(10) / 10, mode='valid')
                    steps = steps[9:]
                label = method if i == 0 and column == 'train_loss' else None
                ax.plot(steps, values, color=f'C{colour % 10}', lw=1, alpha=0.8, label=label)
    axes[0].set(title='classifier training loss (mean of 10 steps)', xlabel='step', yscale='log')
    axes[1].set(title='validation accuracy', xlabel='step')
    fig.legend(loc='outside right center', fontsize=7)
    return fig


class _RandomFeatures(nn.Module):
    """A fixed random conv net: per-channel mean and std of two layers (64 features)."""

    num_features = 64

    def __init__(self, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False)
        self.conv2 = nn.Conv2d(16, 16, 3, stride=2, padding=1, bias=False)
        with torch.no_grad():
            for conv in (self.conv1, self.conv2):
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * 0.3)
        self.requires_grad_(False)

    def forward(self, images: Tensor) -> Tensor:
        x = images.float() / 127.5 - 1
        first = torch.relu(self.conv1(x))
        second = torch.relu(self.conv2(first))
        stats = [t.flatten(2) for t in (first, second)]
        return torch.cat([s.mean(-1) for s in stats] + [s.std(-1) for s in stats], dim=1)


def random_features(seed: int = 0) -> nn.Module:
    """FID features for tiny setups: a fixed random conv net (not comparable with Inception).

    Args:
        seed: seed of its weights.

    Returns:
        A module mapping images [B, 3, H, W] (0..255) to [B, 64] features.
    """
    return _RandomFeatures(seed)
