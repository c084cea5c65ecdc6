# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The demo end to end at a toy scale: every stage runs and the report links real files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from torchgeo_earthsynth import demo
from torchgeo_earthsynth.demo import DemoConfig, run_demo


def test_demo_writes_an_honest_report(tmp_path: Path) -> None:
    config = DemoConfig(
        output=tmp_path / 'demo',
        image_size=32,
        num_train=16,
        num_val=8,
        steps=4,
        vae_steps=2,
        batch_size=4,
        inference_steps=2,
        num_synthetic=8,
        downstream_budgets=(8,),
        downstream_steps=3,
        seeds=(0,),
        layout_threshold=0.0,
    )
    report = run_demo(config)
    text = report.read_text()
    for heading in (
        '## Training',
        '## Generated samples',
        '## Do generated images follow',
        '## R-Filter',
        '## Downstream segmentation',
        '| real scenes | arm |',
        'alignment rule cannot drop anything (nor can layout, threshold 0)',
        '## Timings',
    ):
        assert heading in text
    for link in re.findall(r'\]\(([^)]+\.png)\)', text):
        assert (report.parent / link).stat().st_size > 0, link
    assert (report.parent / 'export' / 'model_index.json').exists()
    summary = json.loads((report.parent / 'demo.json').read_text())
    assert [row['images'] for row in summary['mask_fidelity']] == [
        'real held-out images (reference)',
        'untrained model',
        'trained model given shuffled masks',
        'trained model',
    ]
    assert all(0 <= row['mIoU'] <= 1 for row in summary['mask_fidelity'])
    # layout threshold 0 with a sane generator keeps samples, and they land in the bank
    assert summary['kept'] > 0
    assert len(list((report.parent / 'bank').rglob('*.png'))) >= summary['kept']
    runs = (report.parent / 'downstream' / 'budget_8' / 'runs.csv').read_text().splitlines()
    assert len(runs) == 3  # header + real + real+synthetic for one seed
    assert runs[0].split(',')[3:5] == ['train_samples', 'steps']
    assert all(row.split(',')[3:5] == ['8', '3'] for row in runs[1:])  # the steps asked
    # numbers stay numbers; one timing row per stage
    assert summary['config']['steps'] == 4 and summary['config']['seeds'] == [0]
    assert [row['arm'] for row in summary['downstream']] == [
        'real',
        'real+synthetic',
        'synthetic-only',
    ]
    assert isinstance(summary['downstream'][1]['diff'], float)
    assert len(summary['timings_s']) == 6
    for stage in summary['timings_s']:
        assert f'| {stage} |' in text
    assert (report.parent / 'downstream' / 'data_efficiency.png').stat().st_size > 0


def test_demo_options_reach_its_config(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[DemoConfig] = []
    monkeypatch.setattr(demo, 'run_demo', seen.append)
    demo.main(['--prediction-type', 'epsilon', '--vae-downscale', '2', '--downstream-budgets', '8'])
    (config,) = seen
    assert (config.prediction_type, config.vae_downscale) == ('epsilon', 2)
    assert config.downstream_budgets == (8,)
    assert DemoConfig().downstream_model['model'] == 'fcn'  # a fast segmenter by default
    with pytest.raises(SystemExit):
        demo.main(['--vae-downscale', '4'])
