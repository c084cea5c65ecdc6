# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""``earthsynth benchmark``: one table and one plot over generators, every number measured."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from torchgeo_earthsynth.cli import main as cli_main
from torchgeo_earthsynth.evaluation.benchmark_config import load_benchmark_config
from torchgeo_earthsynth.evaluation.benchmark_report import COLUMNS

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.filterwarnings('ignore:ClipScorer')
def test_benchmark_writes_its_table_with_every_column_filled(tmp_path: Path) -> None:
    config = tmp_path / 'benchmark.yaml'
    config.write_text(
        f"""
generators:
  - {{name: sr, source: tiny-sr, num_inference_steps: 2}}
  - {{name: mask, source: tiny-earthsynth, num_inference_steps: 2, guidance_scale: 3.0}}
data: {{size: 32, scale: 2, num_train: 32, num_val: 16}}
eval_scenes: 4
train_scenes: 16
baseline_steps: 3
clip_model: tiny
fid_feature: random
classification:
  seeds: [0]
  data: {{batch_size: 4}}
  trainer: {{accelerator: cpu, max_steps: 2, limit_val_batches: 1}}
output: {tmp_path / 'out'}
progress: false
"""
    )
    cli_main(['benchmark', '--config', str(config)])
    out = tmp_path / 'out'
    for name in ('benchmark.csv', 'benchmark.md', 'benchmark.json', 'benchmark.png'):
        assert (out / name).is_file()
    rows = list(csv.DictReader((out / 'benchmark.csv').open()))
    assert [row['method'] for row in rows] == [
        'real',
        'bicubic',
        'regression (ESPCN)',
        'DSCLoRA (SPAN + ConvLoRA, distilled)',
        'sr',
        'mask',
    ]
    assert [row['kind'] for row in rows][4:] == ['diffusion SR', 'mask-to-image']
    for row in rows:
        for key, _, _ in COLUMNS:
            if row['method'] == 'real' and key in ('psnr_y', 'ssim_y'):
                assert row[key] == ''  # real against itself: not applicable
                continue
            assert math.isfinite(float(row[key])), (row['method'], key, row[key])
    accuracy = [float(row['accuracy']) for row in rows]
    assert all(0 <= value <= 1 for value in accuracy)
    # bicubic is a fixed function of the low-res input: its PSNR is far above an untrained
    # generator's (the table says what each method is worth)
    by_method = {row['method']: row for row in rows}
    assert float(by_method['bicubic']['psnr_y']) > float(by_method['sr']['psnr_y'])
    assert '| bicubic | interpolation |' in (out / 'benchmark.md').read_text()


def test_benchmark_config_checks_fields() -> None:
    config = load_benchmark_config(REPO / 'configs' / 'benchmark_mini.yaml')
    assert [spec.source for spec in config.specs][:2] == ['tiny-sr', 'tiny-sr']
    with pytest.raises(ValueError, match='train_steps is for source tiny-sr only'):
        load_benchmark_config(
            {'generators': [{'name': 'x', 'source': 'tiny-earthsynth', 'train_steps': 3}]}
        )
    with pytest.raises(ValueError, match='distinct'):
        load_benchmark_config({'generators': [{'name': 'bicubic', 'source': 'tiny-sr'}]})
    with pytest.raises(ValueError, match='name and source'):
        load_benchmark_config({'generators': [{'name': 'x'}]})
    with pytest.raises(ValueError, match='bad benchmark config'):
        load_benchmark_config({'clip_modell': 'tiny'})
