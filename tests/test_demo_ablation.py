# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Smoke test of benchmarks/demo_ablation.py at tiny size."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / 'benchmarks' / 'demo_ablation.py'


def _load():
    spec = importlib.util.spec_from_file_location('demo_ablation', SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.filterwarnings('ignore')
def test_ablation_runs_every_setting(tmp_path: Path) -> None:
    ablation = _load()
    result = ablation.main(
        [
            '--budgets',
            '4',
            '--seeds',
            '0',
            '1',
            '--downstream-steps',
            '2',
            '--num-bank',
            '4',
            '--num-train',
            '32',
            '--num-val',
            '16',
            '--output',
            str(tmp_path),
        ]
    )
    settings = {row['setting'] for row in result['rows']}
    assert settings == {name for name, _, _ in ablation.SETTINGS}
    # two arms per setting and budget; only real+synthetic has a paired difference
    assert len(result['rows']) == 2 * len(ablation.SETTINGS)
    for row in result['rows']:
        assert (row['diff'] is None) == (row['arm'] == 'real')
        assert 0.0 <= row['miou'] <= 1.0
    unfiltered = [r for r in result['rows'] if 'no R-Filter' in r['setting']]
    assert all(r['kept'] == '4/4' for r in unfiltered)
    written = json.loads((tmp_path / 'ablation.json').read_text())
    assert written['rows'] == json.loads(json.dumps(result['rows']))
    assert 'CF-Comp + R-Filter' in (tmp_path / 'ablation.md').read_text()
