# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Tests for the downstream experiment harness (``earthsynth evaluate``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import yaml

from torchgeo_earthsynth.bank import ChangePairBank
from torchgeo_earthsynth.compat import CHANGE_IOU_METRIC, SEGMENTATION_MICRO_METRICS
from torchgeo_earthsynth.datamodules.downstream import (
    SEGMENTATION_CLASSES,
    MiniClassificationDataModule,
    MiniSegmentationDataModule,
)
from torchgeo_earthsynth.evaluation import (
    ExperimentConfig,
    ExperimentResult,
    PresentClassIoU,
    RunResult,
    SyntheticTrainSet,
    load_config,
    main,
    run_experiment,
    summarize,
)
from torchgeo_earthsynth.evaluation.config import _Plan
from torchgeo_earthsynth.synthesis import Synthesizer
from torchgeo_earthsynth.transforms import fill_change_bank

CONFIGS = Path(__file__).parents[1] / 'configs'
AUG = 'torchgeo_earthsynth.transforms.synthetic_augmentation'
FAST_TRAINER = {'accelerator': 'cpu', 'max_steps': 2, 'limit_val_batches': 1}


@pytest.fixture(scope='module')
def classification(
    mini_root: Path, bank_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> ExperimentResult:
    """All three arms, 2 seeds; real+synthetic through the bank shorthand."""
    return run_experiment(
        {
            'task': 'classification',
            'data': {'root': str(mini_root), 'batch_size': 4},
            'bank': str(bank_root),
            'synthetic': {'p': 1.0},
            'seeds': [0, 1],
            'trainer': FAST_TRAINER,
            'output': str(tmp_path_factory.mktemp('classification') / 'report'),
            'progress': False,
        }
    )


@pytest.fixture(scope='module')
def segmentation(mini_root: Path, tmp_path_factory: pytest.TempPathFactory) -> ExperimentResult:
    """real and real+synthetic (online tiny synthesizer), 2 seeds, 12 real training scenes."""
    synthetic = {
        'class_path': f'{AUG}.SyntheticAugmentation',
        'init_args': {
            'source': 'online',
            'p': 0.5,
            'synthesizer': {
                'class_path': f'{AUG}.SynthesizerLoader',
                'init_args': {'tiny': True, 'image_size': 32, 'num_inference_steps': 1},
            },
        },
    }
    return run_experiment(
        {
            'task': 'segmentation',
            'data': {
                'class_path': 'torchgeo_earthsynth.datamodules.downstream.'
                'MiniSegmentationDataModule',
                'init_args': {'root': str(mini_root), 'batch_size': 4, 'synthetic': synthetic},
            },
            'arms': ['real', 'real+synthetic'],
            'seeds': [0, 1],
            'train_subset': 12,
            'trainer': FAST_TRAINER,
            'output': str(tmp_path_factory.mktemp('segmentation') / 'report'),
            'progress': False,
        }
    )


class NoSlotSegmentation(MiniSegmentationDataModule):
    """A datamodule without a ``synthetic`` argument, like TorchGeo's own ones."""

    def __init__(self, root: str, batch_size: int = 4) -> None:
        super().__init__(batch_size=batch_size, root=root)


def check_summary(result: ExperimentResult, arms: list[str], seeds: list[int]) -> None:
    """Every arm x seed ran, metrics in [0, 1], summary equals numpy on the recorded values."""
    assert sorted((r.arm, r.seed) for r in result.runs) == sorted(
        (a, s) for a in arms for s in seeds
    )
    assert list(result.summary) == arms
    for run in result.runs:
        assert 0.0 <= run.value <= 1.0
        assert run.value == run.metrics[result.metric]
        assert run.folder.is_dir() and (run.folder / 'metrics.csv').is_file()
    real = np.array([result.value('real', s) for s in seeds])
    for arm in arms:
        values = np.array([result.value(arm, s) for s in seeds])
        summary = result.summary[arm]
        assert summary.n == len(seeds)
        assert summary.mean == pytest.approx(values.mean())
        assert summary.std == pytest.approx(values.std(ddof=1))
        assert summary.diff == pytest.approx(values.mean() - real.mean())
        assert summary.paired_diffs == pytest.approx(dict(zip(seeds, values - real)))
        assert summary.paired_diff_std == pytest.approx((values - real).std(ddof=1))
        assert summary.wins == int((values > real).sum())
    assert result.summary['real'].diff == 0.0


def check_files(result: ExperimentResult, arms: list[str], seeds: list[int]) -> None:
    files = result.files
    report = json.loads(files['json'].read_text())
    assert report['metric'] == result.metric
    assert len(report['runs']) == len(arms) * len(seeds)
    assert report['summary'][arms[-1]]['mean'] == pytest.approx(result.summary[arms[-1]].mean)
    assert report['config']['seeds'] == seeds
    with files['runs_csv'].open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(arms) * len(seeds)
    assert {'arm', 'seed', result.metric, 'train_samples'} <= set(rows[0])
    first = result.runs[0]
    assert float(rows[0][result.metric]) == pytest.approx(first.value)
    with files['summary_csv'].open() as f:
        summary = list(csv.reader(f))
    assert summary[0] == [
        'arm',
        'metric',
        'n',
        'mean',
        'std',
        'diff_vs_real',
        'paired_diff_mean',
        'paired_diff_std',
        'wins',
    ]
    assert [row[0] for row in summary[1:]] == arms
    assert float(summary[1][3]) == pytest.approx(result.summary[arms[0]].mean)
    png = files['plot'].read_bytes()
    assert png.startswith(b'\x89PNG') and len(png) > 1000


def test_classification_all_arms(classification: ExperimentResult, bank_root: Path) -> None:
    arms = ['real', 'real+synthetic', 'synthetic-only']
    assert classification.metric == 'test_OverallAccuracy'
    check_summary(classification, arms, [0, 1])
    check_files(classification, arms, [0, 1])
    for run in classification.runs:
        if run.arm == 'real+synthetic':  # the bank really stood in for real samples
            assert run.synthetic_stats is not None
            assert run.synthetic_stats['from_bank'] > 0
            assert run.synthetic_stats['replaced'] == run.synthetic_stats['from_bank']
        else:
            assert run.synthetic_stats is None
    # synthetic-only trained on the bank's samples (labelled by dominant class), not the real set
    lut = MiniClassificationDataModule().lut
    bank_size = len(SyntheticTrainSet(bank_root, 'classification', lut))
    only = [r for r in classification.runs if r.arm == 'synthetic-only']
    real = [r for r in classification.runs if r.arm == 'real']
    assert {r.train_samples for r in only} == {bank_size}
    assert bank_size != real[0].train_samples


def test_segmentation_online_and_subset(segmentation: ExperimentResult) -> None:
    arms = ['real', 'real+synthetic']
    assert segmentation.metric == 'test_mIoU'
    check_summary(segmentation, arms, [0, 1])
    check_files(segmentation, arms, [0, 1])
    for run in segmentation.runs:
        assert run.train_samples == 12
        # TorchGeo's own metrics are kept next to the added macro mIoU
        assert {f'test_{name}' for name in SEGMENTATION_MICRO_METRICS} <= set(run.metrics)
    synthetic = [r for r in segmentation.runs if r.arm == 'real+synthetic']
    for run in synthetic:
        assert run.synthetic_stats is not None
        assert run.synthetic_stats['generated'] > 0
        assert run.synthetic_stats['seen'] == 2 * 4  # max_steps x batch_size


def test_same_seed_same_result_via_cli(
    segmentation: ExperimentResult, mini_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = {
        'task': 'segmentation',
        'data': {'root': str(mini_root), 'batch_size': 4},
        'seeds': [0],
        'train_subset': 12,
        'trainer': FAST_TRAINER,
        'progress': False,
    }
    path = tmp_path / 'experiment.yaml'
    path.write_text(yaml.safe_dump(config))
    main(['--config', str(path), '--output', str(tmp_path / 'cli')])
    out = capsys.readouterr().out
    assert 'test_mIoU' in out and out.splitlines()[1].startswith('real ')
    report = json.loads((tmp_path / 'cli' / 'results.json').read_text())
    assert [(r['arm'], r['seed']) for r in report['runs']] == [('real', 0)]
    first = next(r for r in segmentation.runs if r.arm == 'real' and r.seed == 0)
    assert report['runs'][0]['metrics'] == first.metrics  # bit-identical rerun
    other = next(r for r in segmentation.runs if r.arm == 'real' and r.seed == 1)
    assert other.metrics['test_loss'] != first.metrics['test_loss']


def test_attach_to_datamodule_without_synthetic_slot(
    mini_root: Path, bank_root: Path, tmp_path: Path
) -> None:
    data = {'class_path': f'{__name__}.NoSlotSegmentation', 'init_args': {'root': str(mini_root)}}
    base = {
        'task': 'segmentation',
        'data': data,
        'seeds': [3],
        'trainer': FAST_TRAINER,
        'output': str(tmp_path),
        'progress': False,
        'arms': ['real+synthetic'],
    }
    with pytest.raises(ValueError, match='NoSlotSegmentation takes no synthetic argument'):
        run_experiment({**base, 'synthetic': {'bank': str(bank_root)}})
    synthetic = {
        'bank': str(bank_root),
        'p': 1.0,
        'classes': list(SEGMENTATION_CLASSES),
        'names': 'LoveDA',  # LoveDA's names; the mini datamodule's values are positions
    }
    result = run_experiment({**base, 'synthetic': synthetic})
    (run,) = result.runs
    assert run.synthetic_stats is not None and run.synthetic_stats['from_bank'] == 2 * 4
    assert result.summary['real+synthetic'].diff is None  # no real arm to compare with
    assert result.summary['real+synthetic'].std is None


def test_summarize_by_hand(tmp_path: Path) -> None:
    def run(arm: str, seed: int, value: float) -> RunResult:
        return RunResult(arm, seed, value, {}, 1, None, 0.0, tmp_path)

    runs = [
        run('real', 0, 0.5),
        run('real', 1, 0.7),
        run('real+synthetic', 0, 0.6),
        run('real+synthetic', 1, 0.6),
        run('synthetic-only', 0, 0.2),
    ]
    summary = summarize(runs, ['real', 'real+synthetic', 'synthetic-only'])
    assert summary['real'].mean == pytest.approx(0.6)
    assert summary['real'].std == pytest.approx(np.sqrt(0.02))
    assert summary['real+synthetic'].diff == pytest.approx(0.0)
    assert summary['real+synthetic'].paired_diffs == pytest.approx({0: 0.1, 1: -0.1})
    assert summary['real+synthetic'].wins == 1
    assert summary['synthetic-only'].std is None  # a single run has no spread
    assert summary['synthetic-only'].diff == pytest.approx(-0.4)
    assert summary['synthetic-only'].paired_diffs == pytest.approx({0: -0.3})
    assert summary['synthetic-only'].paired_diff_std is None


def test_shipped_config_is_valid() -> None:
    config = load_config(CONFIGS / 'evaluate_mini.yaml')
    assert config.task == 'segmentation'
    assert config.arms == ['real', 'real+synthetic']
    assert len(config.seeds) == 2
    assert config.trainer['accelerator'] == 'cpu'
    assert config.metric_name == 'test_mIoU'
    change = load_config(CONFIGS / 'evaluate_change_mini.yaml')
    assert change.task == 'change' and change.arms == ['real', 'real+synthetic']
    assert change.metric_name == CHANGE_IOU_METRIC
    _Plan(change)  # the datamodule and the change pairs resolve


def test_default_arms_follow_the_sources() -> None:
    assert ExperimentConfig().arms == ['real']
    assert ExperimentConfig(synthetic={'p': 0.5}).arms == ['real', 'real+synthetic']
    assert ExperimentConfig(bank='b').arms == ['real', 'real+synthetic', 'synthetic-only']


@pytest.mark.parametrize(
    ('config', 'match'),
    [
        ({'arms': ['real', 'fake']}, r"unknown arm\(s\) \['fake'\] in arms"),
        ({'arms': ['real', 'synthetic-only']}, "arm 'synthetic-only' needs bank"),
        ({'arms': ['real+synthetic']}, "arm 'real\\+synthetic' needs synthetic"),
        ({'arms': ['real', 'real']}, 'arms lists an arm twice'),
        ({'seeds': []}, 'seeds is empty'),
        ({'seeds': [1, 1]}, 'seeds lists a seed twice'),
        ({'train_subset': 0.0}, r'train_subset must be .* got 0.0'),
        ({'train_subset': 1.5}, r'train_subset must be .* got 1.5'),
        ({'budgets': [8, 8]}, r'budgets must list distinct'),
        ({'budgets': [0]}, r'budgets must list distinct .* got \[0\]'),
        ({'trainer': {'logger': True}}, r"trainer: \['logger'\] are set by the harness"),
        ({'task': 'tracking'}, 'bad experiment config: .*task'),
        ({'sedes': [0]}, "bad experiment config: .*'sedes'"),
    ],
)
def test_bad_config(config: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_config(config)


def test_integral_float_subset_is_a_count() -> None:
    # jsonargparse may hand `int | float` fields over as floats (lowest-direct CI)
    config = load_config({'train_subset': 48.0})
    assert config.train_subset == 48 and isinstance(config.train_subset, int)
    assert load_config({'train_subset': 1.0}).train_subset == 1.0  # a share: all of them


def test_bad_config_caught_before_training(tmp_path: Path, mini_root: Path) -> None:
    base = {
        'output': str(tmp_path / 'out'),
        'progress': False,
        'trainer': FAST_TRAINER,
        'data': {'root': str(mini_root), 'batch_size': 4},
    }
    with pytest.raises(ValueError, match=r'bank .*missing.* has no train/images or train/masks'):
        run_experiment({**base, 'bank': str(tmp_path / 'missing'), 'arms': ['synthetic-only']})
    with pytest.raises(ValueError, match=r"(?s)bad data: .*'bogus' is not accepted"):
        run_experiment({**base, 'data': {'root': str(mini_root), 'bogus': 1}})
    with pytest.raises(ValueError, match=r'(?s)bad data: .*nowhere.DataModule'):
        run_experiment({**base, 'data': {'class_path': 'nowhere.DataModule'}})
    with pytest.raises(ValueError, match=r"(?s)bad synthetic: .*'q' is not accepted"):
        run_experiment({**base, 'synthetic': {'q': 0.5, 'bank': str(tmp_path)}})
    with pytest.raises(ValueError, match=r"synthetic.task is 'classification' but the experiment"):
        run_experiment(
            {
                **base,
                'task': 'segmentation',
                'synthetic': {'task': 'classification', 'bank': str(tmp_path)},
            }
        )
    with pytest.raises(ValueError, match=r'experiment config .*nope.yaml does not exist'):
        run_experiment(tmp_path / 'nope.yaml')
    assert not (tmp_path / 'out').exists()  # nothing ran


def test_no_training_step_and_unknown_metric(tmp_path: Path, mini_root: Path) -> None:
    base = {
        'output': str(tmp_path / 'out'),
        'progress': False,
        'trainer': FAST_TRAINER,
        'task': 'classification',
        'seeds': [0],
    }
    with pytest.raises(ValueError, match=r'real seed 0: no training step ran \(2 training'):
        run_experiment(
            {**base, 'train_subset': 2, 'data': {'root': str(mini_root), 'batch_size': 4}}
        )
    with pytest.raises(ValueError, match=r"metric 'test_mIoU' was not logged .*test_Overall"):
        run_experiment(
            {**base, 'metric': 'test_mIoU', 'data': {'root': str(mini_root), 'batch_size': 2}}
        )


class RecordingSegmentation(MiniSegmentationDataModule):
    """Records the images each loader serves, to check which scenes train, select and test."""

    served: ClassVar[dict[str, set[bytes]]] = {}

    def _record(self, name: str, dataset: Any) -> None:
        images = {dataset[i]['image'].numpy().tobytes() for i in range(len(dataset))}
        self.served.setdefault(name, set()).update(images)

    def train_dataloader(self) -> Any:
        self._record('train', self.train_dataset)
        return super().train_dataloader()

    def val_dataloader(self) -> Any:
        self._record('val', self.val_dataset)
        return super().val_dataloader()

    def test_dataloader(self) -> Any:
        self._record('test', self.test_dataset)
        return super().test_dataloader()


def test_trains_the_steps_asked_and_tests_on_a_held_out_split(
    mini_root: Path, tmp_path: Path
) -> None:
    # 8 scenes / batch 4 = 2 steps an epoch: the default max_epochs (10) must not cap 24 steps
    RecordingSegmentation.served = {}
    result = run_experiment(
        {
            'task': 'segmentation',
            'data': {
                'class_path': f'{__name__}.RecordingSegmentation',
                'init_args': {'root': str(mini_root), 'batch_size': 4},
            },
            'seeds': [0],
            'train_subset': 8,
            'trainer': {'accelerator': 'cpu', 'max_steps': 24, 'limit_val_batches': 1},
            'output': str(tmp_path),
            'progress': False,
        }
    )
    (run,) = result.runs
    assert run.steps == 24
    with (run.folder / 'metrics.csv').open() as f:
        logged = [int(row['step']) for row in csv.DictReader(f) if row.get('train_loss')]
    assert max(logged) + 1 == 24  # read back from the logger, not from the config
    with result.files['runs_csv'].open() as f:
        (row,) = list(csv.DictReader(f))
    assert (row['train_samples'], row['steps']) == ('8', '24')
    assert 'test_MulticlassJaccardIndex' not in row  # one IoU definition in the table
    served = RecordingSegmentation.served
    assert len(served['train']) == 8 and served['val'] and served['test']
    assert not served['test'] & served['train']
    assert not served['test'] & served['val']
    # every held-out scene is in exactly one of validation and test
    assert len(served['val']) + len(served['test']) == 8
    assert result.files['curves'].read_bytes().startswith(b'\x89PNG')


def test_miou_is_the_mean_over_classes_present() -> None:
    metric = PresentClassIoU(4)
    target = torch.tensor([[[0, 0, 1, 1]]])
    preds = torch.tensor([[[0, 1, 1, 3]]])  # class 3 predicted but absent, class 2 neither
    metric.update(preds, target)
    # class 0: 1/2, class 1: 1/3 (1 hit; 1 miss, 1 false positive); 2: NaN; 3: 0 (absent)
    assert float(metric.compute()) == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert metric.per_class[:2].tolist() == pytest.approx([1 / 2, 1 / 3])
    assert torch.isnan(metric.per_class[2]) and metric.per_class[3] == 0


def test_held_out_split_is_fixed_and_disjoint(mini_root: Path) -> None:
    dm = MiniSegmentationDataModule(root=mini_root, seed=5)
    val, test = dm.held_out_indices(10)
    assert sorted(val + test) == list(range(10)) and len(test) == 5
    assert (val, test) == MiniSegmentationDataModule(root=mini_root).held_out_indices(10)
    with pytest.raises(ValueError, match='at least 2'):
        dm.held_out_indices(1)
    with pytest.raises(ValueError, match='test_share must be in'):
        MiniSegmentationDataModule(root=mini_root, test_share=1.0)


def test_epoch_samples_repeat_a_small_budget_within_an_epoch(
    mini_root: Path, tmp_path: Path
) -> None:
    # 4 scenes / batch 2 = 2 steps an epoch, so 8 steps validate 4 times; with epoch_samples
    # 8 an epoch holds the 4 scenes twice (4 steps): 2 validations, same steps and scenes
    def validations(epoch_samples: int | None) -> tuple[RunResult, int]:
        result = run_experiment(
            {
                'task': 'segmentation',
                'data': {
                    'class_path': 'torchgeo_earthsynth.datamodules.downstream.'
                    'MiniSegmentationDataModule',
                    'init_args': {'root': str(mini_root), 'batch_size': 2},
                },
                'seeds': [0],
                'train_subset': 4,
                'epoch_samples': epoch_samples,
                'trainer': {'accelerator': 'cpu', 'max_steps': 8, 'limit_val_batches': 1},
                'output': str(tmp_path / str(epoch_samples)),
                'progress': False,
            }
        )
        (run,) = result.runs
        with (run.folder / 'metrics.csv').open() as f:
            return run, sum(1 for row in csv.DictReader(f) if row.get('val_loss'))

    once, once_validations = validations(None)
    repeated, repeated_validations = validations(8)
    assert (once.steps, repeated.steps) == (8, 8)
    assert once.train_samples == repeated.train_samples == 4
    assert (once_validations, repeated_validations) == (4, 2)
    with pytest.raises(ValueError, match='epoch_samples must be a count'):
        ExperimentConfig(epoch_samples=0)


def test_change_detection_real_and_synthetic_pairs(tmp_path: Path) -> None:
    """TorchGeo's ChangeDetectionTask on real pairs and on real + synthetic (tiny) pairs."""
    pairs = {
        'init_args': {
            'probability': 1.0,
            'synthesizer': {
                'class_path': f'{AUG}.SynthesizerLoader',
                'init_args': {'tiny': True, 'image_size': 32, 'num_inference_steps': 1},
            },
        }
    }
    result = run_experiment(
        {
            'task': 'change',
            'model': {'model': 'fcn', 'num_filters': 8},
            'data': {
                'root': str(tmp_path / 'mini'),
                'batch_size': 4,
                'num_train': 12,
                'num_val': 4,
                'synthetic': pairs,
            },
            'seeds': [0],
            'train_subset': 8,
            'trainer': FAST_TRAINER,
            'output': str(tmp_path / 'report'),
            'progress': False,
        }
    )
    assert result.metric == CHANGE_IOU_METRIC
    assert [(run.arm, run.seed) for run in result.runs] == [('real', 0), ('real+synthetic', 0)]
    for run in result.runs:
        assert 0.0 <= run.value <= 1.0 and run.value == run.metrics[CHANGE_IOU_METRIC]
        assert run.steps == 2 and (run.folder / 'metrics.csv').is_file()
    synthetic = next(run for run in result.runs if run.arm == 'real+synthetic')
    stats = {'batches': 2, 'generated': 8, 'drawn': 0}  # every row, 2 steps
    assert synthetic.synthetic_stats == stats
    real = next(run for run in result.runs if run.arm == 'real')
    assert real.synthetic_stats is None and real.train_samples == 8
    with pytest.raises(ValueError, match="task 'change' has no 'synthetic-only' arm"):
        ExperimentConfig(task='change', bank=str(tmp_path), arms=['synthetic-only'])
    with pytest.raises(ValueError, match='holds no change pair'):
        run_experiment({'task': 'change', 'bank': str(tmp_path / 'empty')})


def test_change_detection_draws_pairs_from_a_bank(tmp_path: Path) -> None:
    """A top-level bank of change pairs fills the real + synthetic arm's batches."""
    synth = Synthesizer.tiny(0, 32, 'earthsynth', num_inference_steps=1, guidance_scale=1.0)
    before = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255
    fill_change_bank(synth, before, ChangePairBank(tmp_path / 'bank'), progress=False)
    result = run_experiment(
        {
            'task': 'change',
            'model': {'model': 'fcn', 'num_filters': 8},
            'data': {'root': str(tmp_path / 'mini'), 'batch_size': 4, 'num_train': 8},
            'bank': str(tmp_path / 'bank'),
            'synthetic': {'probability': 1.0},
            'seeds': [0],
            'trainer': FAST_TRAINER,
            'output': str(tmp_path / 'report'),
            'progress': False,
        }
    )
    assert [run.arm for run in result.runs] == ['real', 'real+synthetic']
    assert result.runs[1].synthetic_stats == {'batches': 2, 'generated': 0, 'drawn': 8}


def test_eurosat_layout_classification_with_a_multispectral_generator(tmp_path: Path) -> None:
    """EuroSAT's 13 bands and labels, real vs real + synthetic 13-band samples (tiny)."""
    synthetic = {
        'init_args': {
            'source': 'online',
            'p': 1.0,
            'layouts': {
                'class_path': 'torchgeo_earthsynth.datasets.EarthSynthMini',
                'init_args': {
                    'root': str(tmp_path / 'mini'),
                    'size': 32,
                    'num_train': 16,
                    'num_val': 8,
                },
            },
            'synthesizer': {
                'class_path': f'{AUG}.SynthesizerLoader',
                'init_args': {
                    'tiny': True,
                    'family': 'multispectral',
                    'image_size': 32,
                    'num_inference_steps': 1,
                },
            },
        }
    }
    result = run_experiment(
        {
            'task': 'classification',
            'model': {'in_channels': 13},
            'data': {
                'class_path': 'torchgeo_earthsynth.datamodules.MiniEuroSATDataModule',
                'init_args': {
                    'root': str(tmp_path / 'mini'),
                    'batch_size': 4,
                    'num_train': 16,
                    'num_val': 8,
                    'synthetic': synthetic,
                },
            },
            'seeds': [0],
            'trainer': FAST_TRAINER,
            'output': str(tmp_path / 'report'),
            'progress': False,
        }
    )
    assert [(run.arm, run.seed) for run in result.runs] == [('real', 0), ('real+synthetic', 0)]
    augmented = result.runs[1]
    assert augmented.synthetic_stats is not None and augmented.synthetic_stats['generated'] > 0
    assert all(0.0 <= run.value <= 1.0 for run in result.runs)


def test_mini_eurosat_is_eurosats_encoding(tmp_path: Path) -> None:
    from torchgeo_earthsynth.datamodules import MiniEuroSATDataModule
    from torchgeo_earthsynth.encodings import ENCODINGS

    dm = MiniEuroSATDataModule(root=tmp_path, num_train=16, num_val=8, bands=('B8A', 'B04'))
    dm.setup('fit')
    sample = dm.train_dataset[0]
    assert sample['image'].shape == (2, 32, 32) and float(sample['image'].max()) > 255
    kept = {int(dm.train_dataset[i]['label']) for i in range(len(dm.train_dataset))}
    assert kept <= {
        ENCODINGS['EuroSAT'].classes.index(c)
        for c in ('AnnualCrop', 'Forest', 'Highway', 'Residential', 'SeaLake')
    }
    assert len(dm.train_dataset) + dm.train_dataset.skipped == 16
    full = MiniEuroSATDataModule(root=tmp_path, num_train=16, num_val=8)
    full.setup('fit')
    # B8A is EuroSAT's last band, B04 its fourth: the same values as the full stack's
    torch.testing.assert_close(sample['image'], full.train_dataset[0]['image'][[12, 3]])
