# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""benchmarks/gpu/paper_scale.py, the GPU check, run at the tiny shape on CPU."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).parents[1] / 'benchmarks' / 'gpu' / 'paper_scale.py'


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location('paper_scale', SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_cpu_smoke_writes_the_json_and_prints_the_ratio_last(tmp_path: Path) -> None:
    out = tmp_path / 'result.json'
    args = ['--shape', 'tiny', '--device', 'cpu', '--size', '32', '--batch-size', '2']
    args += ['--train-steps', '1', '--warmup', '1', '--steps', '2', '--num-images', '2']
    args += ['--rounds', '1', '--out', str(out)]
    run = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    for key in ('train_samples_per_s', 'synthesis_images_per_s'):
        assert set(result[key]) == {'ours', 'diffusers'} and min(result[key].values()) > 0
    assert result['installed_from_wheels'] == []
    last = run.stdout.strip().splitlines()[-1]
    assert last == f'ratio: {result["ratio"]:.3f}'
    assert result['ratio'] == min(result['train_ratio'], result['synthesis_ratio'])


def test_missing_modules_without_wheels_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = _script()
    monkeypatch.setattr(script, 'NEEDED', ('no_such_module_here', 'json'))
    assert script.missing_modules() == ['no_such_module_here']
    with pytest.raises(SystemExit, match='missing no_such_module_here and no wheel folder'):
        script.install_from_wheels(None)
    with pytest.raises(SystemExit, match='has no torchgeo_earthsynth-'):
        script.install_from_wheels(tmp_path)
