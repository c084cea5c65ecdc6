# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Tests for the data-efficiency study (score against real labelled scenes)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from torchgeo_earthsynth.evaluation import RunResult
from torchgeo_earthsynth.evaluation.data_efficiency import (
    DataEfficiencyResult,
    _rows,
    interval95,
    run_data_efficiency,
    write_data_efficiency,
)


def run(arm: str, seed: int, value: float, samples: int, folder: Path) -> RunResult:
    return RunResult(arm, seed, value, {}, samples, None, 0.0, folder)


def test_interval95_matches_the_t_table() -> None:
    values = [0.1, 0.3, 0.2, 0.5, 0.4]
    mean, low, high = interval95(values)
    half = 2.776 * np.std(values, ddof=1) / np.sqrt(5)  # t(0.975, df=4) from any table
    assert (mean, low, high) == pytest.approx((0.3, 0.3 - half, 0.3 + half), abs=1e-4)
    assert np.isnan(interval95([0.5])[1])
    with pytest.raises(ValueError, match='at least one'):
        interval95([])


def test_paired_rows_and_report(tmp_path: Path) -> None:
    real = [0.50, 0.55, 0.60, 0.52, 0.58]
    gain = [0.05, 0.04, 0.06, 0.05, 0.05]  # a steady gain: the paired interval excludes 0
    runs = [run('real', s, v, 8, tmp_path) for s, v in enumerate(real)]
    runs += [
        run('real+synthetic', s, v + g, 8, tmp_path) for s, (v, g) in enumerate(zip(real, gain))
    ]
    only = [run('synthetic-only', s, 0.1 * s, 64, tmp_path) for s in range(5)]
    rows = _rows(8, runs, only)
    assert [r.arm for r in rows] == ['real', 'real+synthetic', 'synthetic-only']
    assert rows[0].diff is None and rows[0].mean == pytest.approx(np.mean(real))
    assert rows[1].diff == pytest.approx(0.05)
    assert rows[1].diff_low is not None and rows[1].diff_low > 0 and rows[1].verdict == 'helps'
    assert rows[1].wins == 5
    assert rows[2].verdict == 'hurts' and rows[2].train_samples == 64 and rows[2].real_samples == 8
    result = DataEfficiencyResult('test_mIoU', {}, None, rows)
    files = write_data_efficiency(result, tmp_path / 'report')
    with files['csv'].open() as f:
        written = list(csv.DictReader(f))
    assert [row['verdict'] for row in written] == ['', 'helps', 'hurts']
    assert float(written[1]['diff']) == pytest.approx(0.05)
    assert '| 8 | real+synthetic | 5 |' in files['table'].read_text()
    assert files['plot'].read_bytes().startswith(b'\x89PNG')


def test_run_data_efficiency_pairs_budgets(
    mini_root: Path, tmp_path: Path, bank_root: Path
) -> None:
    result = run_data_efficiency(
        {
            'task': 'segmentation',
            'data': {'root': str(mini_root), 'batch_size': 4},
            'bank': str(bank_root),
            'arms': ['real', 'synthetic-only'],
            'seeds': [0, 1],
            'trainer': {'accelerator': 'cpu', 'max_steps': 1, 'limit_val_batches': 1},
            'output': str(tmp_path),
            'progress': False,
        },
        budgets=[4, None],
    )
    assert [(r.budget, r.arm, r.real_samples) for r in result.rows] == [
        (4, 'real', 4),
        (4, 'synthetic-only', 4),
        (None, 'real', 24),
        (None, 'synthetic-only', 24),
    ]
    assert result.synthetic_only is not None and len(result.synthetic_only.runs) == 2
    assert all(r.steps == 1 for e in result.experiments.values() for r in e.runs)
    assert result.files['plot'].is_file()
    with pytest.raises(ValueError, match='budgets must list distinct'):
        run_data_efficiency({'task': 'segmentation'}, budgets=[4, 4])
