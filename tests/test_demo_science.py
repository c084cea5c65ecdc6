# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Tests for the demo's science: long-tailed corpus, bank layouts, calibrated R-Filter."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from test_rfilter import CodeSegmenter, only

from torchgeo_earthsynth.bank.layouts import class_counts, draw_layouts
from torchgeo_earthsynth.datasets import EarthSynthMini, make_mini_corpus
from torchgeo_earthsynth.datasets.mini import LONG_TAIL_SHARES
from torchgeo_earthsynth.evaluation import RunResult
from torchgeo_earthsynth.evaluation.data_efficiency import DataEfficiencyResult
from torchgeo_earthsynth.rfilter import RFilter
from torchgeo_earthsynth.vocabulary import VOCABULARY, present_ids

CORPUS = {'size': 32, 'num_train': 60, 'num_val': 20}


def scenes_with(root: Path, split: str) -> dict[int, int]:
    """How many scenes of a split hold each class id."""
    counts: dict[int, int] = {}
    for path in sorted((root / split / 'masks').glob('*.png')):
        with Image.open(path) as image:
            for i in present_ids(torch.from_numpy(np.array(image)).long()):
                counts[i] = counts.get(i, 0) + 1
    return counts


@pytest.fixture(scope='module')
def corpora(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp('long-tail')
    return (
        make_mini_corpus(folder / 'balanced', **CORPUS),
        make_mini_corpus(folder / 'long', long_tail=True, **CORPUS),
    )


def test_long_tail_keeps_rare_classes_in_few_training_scenes(corpora: tuple[Path, Path]) -> None:
    balanced, long = corpora
    assert balanced != long
    full, tail = scenes_with(balanced, 'train'), scenes_with(long, 'train')
    for cls, share in LONG_TAIL_SHARES.items():
        # a binomial draw of 60 scenes at p = share: 3 sigma above its mean is never reached
        limit = CORPUS['num_train'] * share + 3 * (CORPUS['num_train'] * share) ** 0.5
        assert tail.get(cls, 0) <= limit, VOCABULARY[cls]
        assert tail.get(cls, 0) < full[cls], VOCABULARY[cls]
    common = set(full) - set(LONG_TAIL_SHARES)
    assert all(tail.get(cls, 0) > 0 for cls in common)


def test_long_tail_tests_every_class(corpora: tuple[Path, Path]) -> None:
    train, val = scenes_with(corpora[1], 'train'), scenes_with(corpora[1], 'val')
    for cls in LONG_TAIL_SHARES:  # val scenes keep every class: rare ones are tested
        share = (train.get(cls, 0) / CORPUS['num_train'], val.get(cls, 0) / CORPUS['num_val'])
        assert share[1] > share[0], VOCABULARY[cls]


def samples(root: Path) -> list[dict[str, Any]]:
    dataset = EarthSynthMini(root.parent, long_tail=True, **CORPUS)
    return [dataset[i] for i in range(len(dataset))]


def test_balanced_draw_gives_rare_classes_their_share(corpora: tuple[Path, Path]) -> None:
    scenes = samples(corpora[1])
    in_train = scenes_with(corpora[1], 'train')
    rare = VOCABULARY[min((c for c in LONG_TAIL_SHARES if c in in_train), key=in_train.__getitem__)]
    real = class_counts([s['mask'] for s in scenes])
    uniform = class_counts([s['mask'] for s in draw_layouts(scenes, 120, 'uniform', seed=0)])
    balanced = class_counts([s['mask'] for s in draw_layouts(scenes, 120, 'balanced', seed=0)])
    assert uniform[rare] == 2 * real[rare]  # 120 = twice the corpus, without replacement
    assert balanced.get(rare, 0) > 2 * uniform[rare]
    assert list(real) == sorted(real, key=lambda name: (real[name], VOCABULARY.index(name)))


def test_cf_comp_draw_pastes_regions_and_rewrites_prompts(corpora: tuple[Path, Path]) -> None:
    scenes = samples(corpora[1])
    balanced = draw_layouts(scenes, 32, 'balanced', seed=3)
    composed = draw_layouts(scenes, 32, 'cf-comp', seed=3)
    assert draw_layouts(scenes, 32, 'cf-comp', seed=3)[5]['prompt'] == composed[5]['prompt']
    changed = [not torch.equal(a['mask'], b['mask']) for a, b in zip(balanced, composed)]
    assert sum(changed) > len(changed) // 2
    for sample in composed:
        names = [VOCABULARY[i] for i in present_ids(sample['mask']) if i]
        assert all(name in sample['prompt'] for name in names), sample['prompt']


def test_draw_layouts_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match='needs samples'):
        draw_layouts([], 4)
    mask = torch.zeros(4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="draw must be 'uniform'"):
        draw_layouts([{'mask': mask}], 4, 'rare-first')  # type: ignore[arg-type]


def test_calibrate_layout_sets_a_fraction_of_the_real_quantile() -> None:
    size = 8
    masks = torch.zeros(10, size, size, dtype=torch.long)
    masks[:, :, size // 2 :] = 4
    images = torch.rand(10, 3, size, size) * 200 + 20
    images[:, 0] = masks * 20.0
    for i in range(10):  # scene i: its class-4 half predicted as background in i columns
        images[i, 0, :, size // 2 : size // 2 + i // 2] = 0.0
    rf = only('layout', segmenter=CodeSegmenter())
    threshold = rf.calibrate_layout({'image': images, 'mask': masks}, quantile=0.2, fraction=0.5)
    assert rf.layout_threshold == threshold
    assert all(c['seen'] == 0 for c in rf.counts.values())  # calibrating counts nothing
    scores = rf({'image': images, 'mask': masks}).scores['layout']
    assert threshold == pytest.approx(0.5 * float(torch.quantile(scores, 0.2)))
    assert 0 < threshold < float(scores.max())


def test_calibrate_layout_rejects_bad_input() -> None:
    real = {'image': torch.zeros(1, 3, 4, 4), 'mask': torch.zeros(1, 4, 4, dtype=torch.long)}
    with pytest.raises(ValueError, match='needs the layout rule'):
        RFilter(alignment=False, clip_model=None).calibrate_layout(real)
    rf = only('layout', segmenter=CodeSegmenter())
    with pytest.raises(ValueError, match=r'fraction in \(0, 1\]'):
        rf.calibrate_layout(real, fraction=0.0)
    with pytest.raises(ValueError, match='quantile must be in'):
        rf.calibrate_layout(real, quantile=1.5)


def run(arm: str, seed: int, samples: int, iou: dict[str, float]) -> RunResult:
    return RunResult(arm, seed, 0.0, {}, samples, None, 0.0, Path('.'), per_class_iou=iou)


def test_per_class_means_over_seeds_and_skips_absent_classes() -> None:
    nan = float('nan')
    runs = [
        run('real', 0, 4, {'tree': 0.2, 'building': nan}),
        run('real', 1, 4, {'tree': 0.4, 'building': 0.1}),
        run('real+synthetic', 0, 4, {'tree': 0.3, 'building': nan}),
        run('real+synthetic', 1, 4, {'tree': 0.5, 'building': nan}),
    ]
    result = DataEfficiencyResult('mIoU', {4: SimpleNamespace(runs=runs)}, None, [])  # type: ignore[dict-item]
    real, synthetic = result.per_class()
    assert (real['real scenes'], real['arm']) == (4, 'real')
    assert real['tree'] == pytest.approx(0.3) and real['building'] == pytest.approx(0.1)
    assert synthetic['tree'] == pytest.approx(0.4) and np.isnan(synthetic['building'])
