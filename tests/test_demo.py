# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The demo end to end at a toy scale: every stage runs and the report links real files."""

from __future__ import annotations

import json
import re
from pathlib import Path

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
        downstream_train=8,
        downstream_steps=2,
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
    ]
    assert all(0 <= row['mIoU'] <= 1 for row in summary['mask_fidelity'])
    # layout threshold 0 with a sane generator keeps samples, and they land in the bank
    assert summary['kept'] > 0
    assert len(list((report.parent / 'bank').rglob('*.png'))) >= summary['kept']
    runs = (report.parent / 'downstream' / 'runs.csv').read_text().splitlines()
    assert len(runs) == 3  # header + real + real+synthetic for one seed
