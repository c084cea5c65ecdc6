# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""``earthsynth benchmark``: one table and one plot over generators, every number measured."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import Subset

from torchgeo_earthsynth.cli import main as cli_main
from torchgeo_earthsynth.evaluation.benchmark import _other_prompts, _synthesizer
from torchgeo_earthsynth.evaluation.benchmark_config import SHIPPED_SOURCE, load_benchmark_config
from torchgeo_earthsynth.evaluation.benchmark_report import COLUMNS, BenchmarkResult, BenchmarkRow
from torchgeo_earthsynth.evaluation.benchmark_verdict import verdict

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
        'real, shuffled prompts',
        'bicubic',
        'regression (ESPCN)',
        'DSCLoRA (SPAN + ConvLoRA, distilled)',
        'sr',
        'mask',
    ]
    assert [row['kind'] for row in rows][5:] == ['diffusion SR', 'mask-to-image']
    for row in rows:
        for key, _, _ in COLUMNS:
            if row['method'] == 'real' and key in ('psnr_y', 'ssim_y'):
                assert row[key] == ''  # real against itself: not applicable
                continue
            if row['method'] == 'real, shuffled prompts':
                assert (row[key] == '') == (key != 'clip_score')  # only an alignment floor
                continue
            assert math.isfinite(float(row[key])), (row['method'], key, row[key])
    accuracy = [float(row['accuracy']) for row in rows if row['method'] != 'real, shuffled prompts']
    assert all(0 <= value <= 1 for value in accuracy)
    # bicubic is a fixed function of the low-res input: its PSNR is far above an untrained
    # generator's (the table says what each method is worth)
    by_method = {row['method']: row for row in rows}
    assert float(by_method['bicubic']['psnr_y']) > float(by_method['sr']['psnr_y'])
    report = (out / 'benchmark.md').read_text()
    assert '| bicubic | interpolation |' in report
    # the verdict names each task; a random CLIP cannot tell real prompts from shuffled ones
    assert '## Verdict' in report
    assert 'Classification' in report and 'Super-resolution' in report
    assert (out / 'benchmark_curves.png').is_file()
    samples = json.loads((out / 'benchmark.json').read_text())['rows'][0]['samples']
    assert len(samples['clip_score']) == 4 and len(samples['accuracy']) == 1


def test_other_prompts_never_keep_a_scene_prompt_when_another_exists() -> None:
    prompts = ['a', 'a', 'b', 'a', 'c', 'c']
    others = _other_prompts(prompts)
    assert all(o != p for o, p in zip(others, prompts))
    assert _other_prompts(['x', 'x']) == ['x', 'x']  # nothing else to give


def _row(method: str, kind: str, **samples: list[float]) -> BenchmarkRow:
    return BenchmarkRow(method, kind, samples=samples)


def test_verdict_says_above_or_below_only_when_the_interval_excludes_zero() -> None:
    rows = [
        _row('real', 'reference', clip_score=[60, 62, 61, 63], accuracy=[0.8, 0.82, 0.81]),
        _row('real, shuffled prompts', 'reference', clip_score=[10, 12, 11, 9]),
        _row('bicubic', 'interpolation', psnr_y=[20, 21, 22, 23], ssim_y=[0.5, 0.5, 0.6, 0.6]),
        _row(
            'good',
            'mask-to-image',
            clip_score=[58, 63, 60, 64],
            accuracy=[0.5, 0.52, 0.51],
            psnr_y=[10, 11, 12, 13],
            ssim_y=[0.5, 0.6, 0.5, 0.6],
        ),
        _row('noise', 'mask-to-image', clip_score=[12, 9, 10, 12], accuracy=[0.1, 0.9, 0.2]),
    ]
    result = BenchmarkResult(rows, {}, scale=2, bands=10, crop_border=2)
    text = '\n'.join(verdict(result))
    assert 'good: not separable from real images' in text
    assert 'above the shuffled-prompt floor' in text
    assert 'noise: below real images' in text and 'no better than the shuffled-prompt floor' in text
    assert 'good: worse than real scenes' in text
    assert 'noise: not separable from real scenes' in text  # spread over seeds: unclear
    assert 'good: below bicubic in PSNR' in text and 'level with in SSIM' in text
    assert 'benchmark_paper.yaml' in text
    # a scorer that cannot tell real prompts from shuffled ones is said to answer nothing
    rows[1] = _row('real, shuffled prompts', 'reference', clip_score=[61, 60, 63, 62])
    assert 'answers nothing' in '\n'.join(verdict(result))


def test_benchmark_config_checks_fields() -> None:
    config = load_benchmark_config(REPO / 'configs' / 'benchmark_mini.yaml')
    assert [spec.source for spec in config.specs][:2] == ['tiny-sr', 'tiny-sr']
    assert config.clip_model == 'trained'
    paper = load_benchmark_config(REPO / 'configs' / 'benchmark_paper.yaml')
    assert paper.clip_pretrained == 'openai' and paper.fid_feature == 'inception'
    with pytest.raises(ValueError, match='clip_steps must be >= 1'):
        load_benchmark_config({'clip_steps': 0})
    with pytest.raises(ValueError, match='train_steps is for source tiny-sr only'):
        load_benchmark_config(
            {'generators': [{'name': 'x', 'source': 'tiny-earthsynth', 'train_steps': 3}]}
        )
    for reserved in ('bicubic', 'real, shuffled prompts'):
        with pytest.raises(ValueError, match='distinct'):
            load_benchmark_config({'generators': [{'name': reserved, 'source': 'tiny-sr'}]})
    with pytest.raises(ValueError, match='name and source'):
        load_benchmark_config({'generators': [{'name': 'x'}]})
    with pytest.raises(ValueError, match='bad benchmark config'):
        load_benchmark_config({'clip_modell': 'tiny'})


def test_shipped_generator_is_a_benchmark_source() -> None:
    config = load_benchmark_config({'generators': [{'name': 'x', 'source': SHIPPED_SOURCE}]})
    train = Subset([{'image': torch.zeros(3, 32, 32)}], [0])
    synth = _synthesizer(config.specs[0], config, train, bands=10, scale=2)
    assert synth.takes('mask') and not synth.takes('low_res')
