# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The demo end to end at a toy scale: every stage runs and the report links real files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from torchgeo_earthsynth.demo import DemoConfig, run_demo
from torchgeo_earthsynth.demo import run as demo


def test_demo_writes_an_honest_report(tmp_path: Path) -> None:
    config = DemoConfig(
        output=tmp_path / 'demo',
        image_size=32,
        num_train=16,
        num_val=8,
        train_generator=True,
        steps=4,
        vae_steps=2,
        batch_size=4,
        inference_steps=2,
        num_synthetic=8,
        num_bank=8,
        # a toy generator follows no mask: a near-zero threshold lets samples into the bank
        layout_fraction=1e-6,
        downstream_budgets=(8,),
        downstream_batch_size=4,
        epoch_samples=8,
        downstream_steps=3,
        seeds=(0,),
    )
    report = run_demo(config)
    text = report.read_text()
    for heading in (
        '## The corpus',
        '## The generator',
        'trained in this run (4 steps)',
        '## Generated samples',
        '## Do generated images follow',
        '## The synthetic bank and R-Filter',
        'quantile of the layout scores of the real training scenes',
        '## Downstream segmentation',
        '| real scenes | arm |',
        'Test IoU per class',
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
        'trained model',
        'trained model given shuffled masks',
    ]
    assert all(0 <= row['mIoU'] <= 1 for row in summary['mask_fidelity'])
    # a threshold near 0 keeps samples, and they land in the bank; classes are counted
    bank = summary['bank']
    assert 0 < bank['kept'] <= bank['generated'] == 8
    assert 0 < bank['layout_threshold'] < 1e-5
    assert len(bank['dropped']) == bank['generated'] - bank['kept']
    assert sum(bank['drawn_classes'].values()) >= 8  # every layout holds a class
    assert len(list((report.parent / 'bank').rglob('*.png'))) >= bank['kept']
    assert {row['arm'] for row in summary['per_class_iou']} >= {'real', 'real+synthetic'}
    runs = (report.parent / 'downstream' / 'budget_8' / 'runs.csv').read_text().splitlines()
    assert len(runs) == 3  # header + real + real+synthetic for one seed
    assert runs[0].split(',')[3:5] == ['train_samples', 'steps']
    assert all(row.split(',')[3:5] == ['8', '3'] for row in runs[1:])  # the steps asked
    # numbers stay numbers; one timing row per stage
    assert summary['config']['steps'] == 4 and summary['config']['seeds'] == [0]
    assert summary['config']['long_tail'] is True
    assert [row['arm'] for row in summary['downstream']] == [
        'real',
        'real+synthetic',
        'synthetic-only',
    ]
    assert isinstance(summary['downstream'][1]['diff'], float)
    assert len(summary['timings_s']) == 5
    for stage in summary['timings_s']:
        assert f'| {stage} |' in text
    assert (report.parent / 'downstream' / 'data_efficiency.png').stat().st_size > 0


def test_demo_options_reach_its_config(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[DemoConfig] = []
    monkeypatch.setattr(demo, 'run_demo', seen.append)
    demo.main(['--prediction-type', 'epsilon', '--vae-downscale', '2', '--downstream-budgets', '8'])
    demo.main(['--train-generator', '--no-rfilter', '--bank-draw', 'uniform'])
    first, second = seen
    assert (first.prediction_type, first.vae_downscale) == ('epsilon', 2)
    assert first.downstream_budgets == (8,)
    assert not first.train_generator and first.rfilter and first.bank_draw == 'cf-comp'
    assert second.train_generator and not second.rfilter and second.bank_draw == 'uniform'
    defaults = DemoConfig()
    assert len(defaults.downstream_budgets) >= 3 and len(defaults.seeds) >= 5
    assert DemoConfig().downstream_model['model'] == 'fcn'  # a fast segmenter by default
    with pytest.raises(SystemExit):
        demo.main(['--vae-downscale', '4'])
