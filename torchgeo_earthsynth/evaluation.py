# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Downstream experiment harness: is synthetic data ready for image recognition?"""

from __future__ import annotations

import copy
import csv
import dataclasses
import importlib
import inspect
import json
import logging
import time
import warnings
from argparse import ArgumentError
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, get_args

import numpy as np
import torch
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace  # type: ignore[attr-defined]
from lightning.pytorch import LightningDataModule, Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger
from matplotlib.figure import Figure
from torch import Tensor
from torch.utils.data import Dataset, Subset
from torchmetrics import Metric, MetricCollection
from tqdm.auto import tqdm

from torchgeo_earthsynth.compat import BaseTask, ClassificationTask, SemanticSegmentationTask
from torchgeo_earthsynth.datasets import EarthSynth180K

TaskName = Literal['classification', 'segmentation']
Arm = Literal['real', 'real+synthetic', 'synthetic-only']

#: The arms of an experiment, in report order.
ARMS: Final[tuple[str, ...]] = get_args(Arm)
#: Test metric reported per task: TorchGeo's overall accuracy, and the mIoU the harness adds
#: (:class:`PresentClassIoU`: IoU per class, averaged over the classes present in the test
#: split). TorchGeo's micro-averaged ``test_MulticlassJaccardIndex`` (pixels pooled over
#: classes, dominated by frequent ones) stays in ``results.json`` but is not reported.
DEFAULT_METRICS: Final[dict[str, str]] = {
    'classification': 'test_OverallAccuracy',
    'segmentation': 'test_mIoU',
}
#: Default init args of the TorchGeo task per experiment task (small, no download).
DEFAULT_MODELS: Final[dict[str, dict[str, Any]]] = {
    'classification': {
        'model': 'resnet18',
        'weights': None,
        'in_channels': 3,
        'task': 'multiclass',
        'loss': 'ce',
        'lr': 1e-3,
        'patience': 5,
    },
    'segmentation': {
        'model': 'unet',
        'backbone': 'resnet18',
        'weights': None,
        'in_channels': 3,
        'task': 'multiclass',
        'loss': 'ce',
        'lr': 1e-3,
        'patience': 5,
    },
}
#: Default datamodule per experiment task.
DEFAULT_DATA: Final[dict[str, str]] = {
    'classification': 'torchgeo_earthsynth.datamodules.downstream.MiniClassificationDataModule',
    'segmentation': 'torchgeo_earthsynth.datamodules.downstream.MiniSegmentationDataModule',
}
#: Default Trainer arguments (anything in ``trainer:`` overrides them). With ``max_steps``
#: given and no ``max_epochs``, ``max_epochs`` becomes -1 so epochs never cap the steps.
DEFAULT_TRAINER: Final[dict[str, Any]] = {
    'accelerator': 'auto',
    'devices': 1,
    'max_epochs': 10,
    'num_sanity_val_steps': 0,
    'log_every_n_steps': 1,
    'enable_progress_bar': False,
    'enable_model_summary': False,
}
#: Trainer arguments the harness sets itself for every run.
RESERVED_TRAINER_ARGS: Final[tuple[str, ...]] = (
    'logger',
    'enable_checkpointing',
    'default_root_dir',
    'callbacks',
)

_AUGMENTATION: Final = 'torchgeo_earthsynth.transforms.synthetic_augmentation.SyntheticAugmentation'
_BANK: Final = 'torchgeo_earthsynth.bank.SyntheticBank'
_TASKS: Final[dict[str, type[BaseTask]]] = {
    'classification': ClassificationTask,
    'segmentation': SemanticSegmentationTask,
}


def _nested_synthetic(data: Mapping[str, Any] | None) -> Any:
    """The ``synthetic`` init arg inside a data spec (full or init-args-only), if any."""
    if not isinstance(data, Mapping):
        return None
    if 'class_path' in data or 'init_args' in data:
        return (data.get('init_args') or {}).get('synthetic')
    return data.get('synthetic')


@dataclass
class ExperimentConfig:
    """What to train and compare; every field has a YAML key of the same name.

    Attributes:
        task: ``classification`` (reports overall accuracy) or ``segmentation`` (mIoU).
        model: init args of TorchGeo's ``ClassificationTask`` / ``SemanticSegmentationTask``,
            over :data:`DEFAULT_MODELS`; ``num_classes`` defaults to the datamodule's
            ``len(classes)``.
        data: the datamodule as ``class_path``/``init_args``, or just init args of the
            default one (:data:`DEFAULT_DATA`). A ``synthetic`` init arg in it is taken out
            and used as :attr:`synthetic` (so the ``real`` arm never sees it).
        synthetic: the synthetic augmentation of the ``real+synthetic`` arm: a
            ``SyntheticAugmentation`` as ``class_path``/``init_args``, or just its init args,
            where ``bank`` may be a folder (read with ``SyntheticBank``); with no bank and no
            synthesizer, :attr:`bank` is drawn from. Its ``task`` and ``seed`` are set by
            the harness (the run's seed).
        bank: a synthetic bank folder in the EarthSynth-180K layout (``train/images``,
            ``train/masks``): the ``synthetic-only`` arm trains on all of it.
        arms: arms to run, from :data:`ARMS`; None runs every arm the config allows
            (``real``, ``real+synthetic`` with a synthetic source, ``synthetic-only`` with
            a bank).
        seeds: one run per arm and seed; the same seed gives every arm the same model
            initialisation, data order and real training subset (paired comparison).
        metric: logged test metric to report (default :data:`DEFAULT_METRICS`).
        train_subset: emulate label scarcity: keep this many real training samples (int) or
            this share of them (float in (0, 1]), drawn per seed; None keeps all.
        budgets: a data-efficiency study instead of one experiment: real training scenes
            per run (null: all), each run like ``train_subset``
            (:func:`~torchgeo_earthsynth.data_efficiency.run_data_efficiency`); the CLI
            writes its table and plot. None runs one experiment.
        trainer: Lightning ``Trainer`` arguments over :data:`DEFAULT_TRAINER`
            (``max_steps``, ``max_epochs``, ``accelerator``, ``limit_train_batches``...).
        output: folder for the report (``results.json``, ``runs.csv``, ``summary.csv``,
            ``results.png``) and one folder of CSV logs per run.
        progress: show a progress bar over the runs.

    .. versionadded:: 0.1
    """

    task: TaskName = 'classification'
    model: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] | None = None
    synthetic: dict[str, Any] | None = None
    bank: str | None = None
    arms: list[str] | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    metric: str | None = None
    train_subset: int | float | None = None
    budgets: list[int | None] | None = None
    trainer: dict[str, Any] = field(default_factory=dict)
    output: str = 'outputs/evaluate'
    progress: bool = True

    def __post_init__(self) -> None:
        """Check the fields.

        Raises:
            ValueError: naming the field and what was expected.
        """
        if self.task not in _TASKS:
            raise ValueError(f"task must be 'classification' or 'segmentation', got {self.task!r}")
        for name in ('model', 'data', 'synthetic'):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Mapping):
                raise ValueError(f'{name} must be a mapping, got {type(value).__name__}')
        has_synthetic = self.synthetic is not None or _nested_synthetic(self.data) is not None
        if self.arms is None:
            self.arms = ['real']
            if has_synthetic or self.bank is not None:
                self.arms.append('real+synthetic')
            if self.bank is not None:
                self.arms.append('synthetic-only')
        if not self.arms:
            raise ValueError(f'arms is empty; expected some of {list(ARMS)}')
        unknown = [arm for arm in self.arms if arm not in ARMS]
        if unknown:
            raise ValueError(f'unknown arm(s) {unknown} in arms; expected some of {list(ARMS)}')
        if len(set(self.arms)) != len(self.arms):
            raise ValueError(f'arms lists an arm twice: {self.arms}')
        if not self.seeds:
            raise ValueError('seeds is empty; expected at least one seed, e.g. [0, 1]')
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f'seeds lists a seed twice: {self.seeds}')
        if 'real+synthetic' in self.arms and not has_synthetic and self.bank is None:
            raise ValueError(
                "arm 'real+synthetic' needs synthetic: (a SyntheticAugmentation) "
                'or bank: <folder of synthetic samples>'
            )
        if 'synthetic-only' in self.arms and self.bank is None:
            raise ValueError(
                "arm 'synthetic-only' needs bank: <folder of synthetic samples in "
                'the EarthSynth-180K layout> to train on'
            )
        subset = self.train_subset
        if isinstance(subset, bool) or (
            subset is not None
            and not (isinstance(subset, int) and subset >= 1)
            and not (isinstance(subset, float) and 0.0 < subset <= 1.0)
        ):
            raise ValueError(
                'train_subset must be a sample count >= 1 (int) or a share in '
                f'(0, 1] (float), got {subset!r}'
            )
        budgets = self.budgets
        if budgets is not None and (
            not budgets
            or len(set(budgets)) != len(budgets)
            or any(isinstance(b, bool) or not (b is None or b >= 1) for b in budgets)
        ):
            raise ValueError(
                f'budgets must list distinct real-scene counts >= 1 (null: all), got {budgets}'
            )
        reserved = sorted(set(self.trainer) & set(RESERVED_TRAINER_ARGS))
        if reserved:
            raise ValueError(
                f'trainer: {reserved} are set by the harness (CSV logs in each run '
                'folder, no checkpoints); remove them'
            )

    @property
    def metric_name(self) -> str:
        """The reported test metric (:attr:`metric` or the task's default)."""
        return self.metric or DEFAULT_METRICS[self.task]


@dataclass(frozen=True)
class RunResult:
    """One trained and tested model.

    Attributes:
        arm: the arm.
        seed: the seed.
        value: the reported metric.
        metrics: every logged test metric.
        train_samples: size of the training set (after ``train_subset``).
        synthetic_stats: counters of the synthetic augmentation (``real+synthetic``), else
            None.
        seconds: wall time of fit and test.
        folder: the run's log folder.
        steps: optimizer steps actually run (the trainer's final ``global_step``).
        per_class_iou: test IoU per class name (multiclass segmentation), NaN for a class
            absent from the test split and never predicted; else None.

    .. versionadded:: 0.1
    """

    arm: str
    seed: int
    value: float
    metrics: dict[str, float]
    train_samples: int
    synthetic_stats: dict[str, int] | None
    seconds: float
    folder: Path
    steps: int = 0
    per_class_iou: dict[str, float] | None = None


@dataclass(frozen=True)
class ArmSummary:
    """An arm's metric over seeds, and its difference to the ``real`` arm.

    Attributes:
        arm: the arm.
        n: number of runs (seeds).
        mean: mean of the metric.
        std: sample standard deviation (``ddof=1``); None for a single run.
        diff: ``mean`` minus the ``real`` arm's mean; None without a ``real`` arm.
        paired_diffs: per seed, this arm's value minus the ``real`` arm's (same seed).
        paired_diff_std: sample standard deviation of ``paired_diffs``; None for fewer
            than two.
        wins: seeds where this arm beat ``real``.

    .. versionadded:: 0.1
    """

    arm: str
    n: int
    mean: float
    std: float | None
    diff: float | None
    paired_diffs: dict[int, float]
    paired_diff_std: float | None
    wins: int


@dataclass
class ExperimentResult:
    """All runs of an experiment, their summary per arm, and the files written.

    .. versionadded:: 0.1
    """

    config: ExperimentConfig
    metric: str
    runs: list[RunResult]
    summary: dict[str, ArmSummary]
    files: dict[str, Path] = field(default_factory=dict)

    def value(self, arm: str, seed: int) -> float:
        """The metric of one run.

        Args:
            arm: the arm.
            seed: the seed.

        Returns:
            The reported metric.

        Raises:
            KeyError: if there is no such run.
        """
        for run in self.runs:
            if run.arm == arm and run.seed == seed:
                return run.value
        raise KeyError(f'no run for arm {arm!r} and seed {seed}')

    def format_table(self) -> str:
        """The summary as a plain-text table.

        Returns:
            One line per arm: mean ± std, difference to ``real`` and the paired difference.
        """
        lines = [
            f'{"arm":<16} {"n":>2}  {self.metric:>24}  {"diff vs real":>12}  '
            f'{"paired diff (wins)":>22}'
        ]
        for s in self.summary.values():
            spread = f' ± {s.std:.4f}' if s.std is not None else ''
            diff = f'{s.diff:+.4f}' if s.diff is not None and s.arm != 'real' else ''
            paired = ''
            if s.paired_diffs and s.arm != 'real':
                paired_mean = float(np.mean(list(s.paired_diffs.values())))
                paired_spread = f' ± {s.paired_diff_std:.4f}' if s.paired_diff_std else ''
                paired = f'{paired_mean:+.4f}{paired_spread} ({s.wins}/{len(s.paired_diffs)})'
            lines.append(
                f'{s.arm:<16} {s.n:>2}  {f"{s.mean:.4f}{spread}":>24}  {diff:>12}  {paired:>22}'
            )
        return '\n'.join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: config, metric, runs and summary.

        Returns:
            The dict written to ``results.json``.
        """
        return {
            'task': self.config.task,
            'metric': self.metric,
            'config': dataclasses.asdict(self.config),
            'runs': [{**dataclasses.asdict(run), 'folder': str(run.folder)} for run in self.runs],
            'summary': {
                arm: {
                    **dataclasses.asdict(s),
                    'paired_diffs': {str(k): v for k, v in s.paired_diffs.items()},
                }
                for arm, s in self.summary.items()
            },
            'versions': _versions(),
        }


# ---------------------------------------------------------------------- configuration
def _config_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog='earthsynth evaluate',
        description='Train TorchGeo tasks on real, real+synthetic and synthetic-only data '
        'over several seeds and report the test metric of each arm.',
        exit_on_error=False,
    )
    parser.add_argument('--config', action=ActionConfigFile, help='experiment YAML')
    parser.add_class_arguments(ExperimentConfig, fail_untyped=True, instantiate=False)
    return parser


def _from_namespace(cfg: Namespace) -> ExperimentConfig:
    values = cfg.as_dict()
    values.pop('config', None)
    values.pop('__path__', None)
    return ExperimentConfig(**values)


def load_config(source: ExperimentConfig | Mapping[str, Any] | str | Path) -> ExperimentConfig:
    """Read and check an experiment config.

    Args:
        source: a config, a mapping of its fields, or a YAML file.

    Returns:
        The checked :class:`ExperimentConfig`.

    Raises:
        ValueError: if a field is unknown, has the wrong type, or a value is invalid.

    .. versionadded:: 0.1
    """
    if isinstance(source, ExperimentConfig):
        return source
    parser = _config_parser()
    if not isinstance(source, Mapping) and not Path(source).is_file():
        raise ValueError(f'experiment config {source} does not exist')
    try:
        if isinstance(source, Mapping):
            cfg = parser.parse_object(dict(source))
        else:
            cfg = parser.parse_args(['--config', str(source)])
    except ArgumentError as error:
        where = '' if isinstance(source, Mapping) else f' {source}'
        raise ValueError(f'bad experiment config{where}: {error}') from error
    return _from_namespace(cfg)


def _spec(value: Mapping[str, Any], default_class: str) -> dict[str, Any]:
    """``{class_path, init_args}`` of a mapping that may be just init args."""
    if 'class_path' in value or 'init_args' in value:
        # command-line overrides (--data.root X, --data.init_args.root X) land beside init_args
        extra = {k: v for k, v in value.items() if k not in ('class_path', 'init_args')}
        return {
            'class_path': value.get('class_path', default_class),
            'init_args': {**dict(value.get('init_args') or {}), **extra},
        }
    return {'class_path': default_class, 'init_args': dict(value)}


def _parse(spec: Mapping[str, Any], base: type, key: str) -> tuple[ArgumentParser, Namespace]:
    """Check a ``class_path``/``init_args`` spec (nested specs too) against ``base``."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument(f'--{key}', type=base)
    try:
        return parser, parser.parse_object({key: copy.deepcopy(dict(spec))})
    except ArgumentError as error:
        raise ValueError(f'bad {key}: {error}') from error


def _instantiate(spec: Mapping[str, Any], base: type, key: str) -> Any:
    """Build a spec with jsonargparse (validated, nested specs built too)."""
    parser, cfg = _parse(spec, base, key)
    return getattr(parser.instantiate(cfg), key)


def _import(class_path: str) -> type:
    module, _, name = class_path.rpartition('.')
    cls: type = getattr(importlib.import_module(module), name)
    return cls


class _Plan:
    """The config resolved into per-run specs (pure data, checked before the first run)."""

    def __init__(self, config: ExperimentConfig) -> None:
        """Resolve the specs and check them, and the bank folder, before the first run.

        Raises:
            ValueError: naming the field at fault.
        """
        self.config = config
        self.arms: list[str] = list(config.arms or ())
        self.trainer = {**DEFAULT_TRAINER, **config.trainer}
        if config.trainer.get('max_steps', -1) not in (-1, None) and (
            'max_epochs' not in config.trainer
        ):
            self.trainer['max_epochs'] = -1  # the steps asked, however small an epoch is
        self.data = _spec(config.data or {}, DEFAULT_DATA[config.task])
        nested = self.data['init_args'].pop('synthetic', None)
        # jsonargparse resolves short class names: import what it found
        _, parsed = _parse(self.data, LightningDataModule, 'data')
        self.data['class_path'] = parsed.data.class_path
        signature = inspect.signature(_import(self.data['class_path']))
        self.data_takes_synthetic = 'synthetic' in signature.parameters
        synthetic = config.synthetic if config.synthetic is not None else nested
        if synthetic is None and config.bank is not None:
            synthetic = {}
        self.synthetic = None
        if synthetic is not None and 'real+synthetic' in self.arms:
            self.synthetic = self._synthetic_spec(synthetic)
        self.bank = Path(config.bank) if config.bank is not None else None
        if self.bank is not None and ('synthetic-only' in self.arms or self.synthetic):
            if not self.bank.exists():
                raise ValueError(
                    f'bank {self.bank} does not exist (so it has no train/images or '
                    'train/masks); fill it with `earthsynth synthesize` first'
                )
            missing = [d for d in ('images', 'masks') if not (self.bank / 'train' / d).is_dir()]
            if missing:
                raise ValueError(
                    f'bank {self.bank} has no train/{" or train/".join(missing)}; '
                    'expected a synthetic bank in the EarthSynth-180K layout '
                    '(e.g. written by `earthsynth synthesize`)'
                )
            if not any((self.bank / 'train' / 'images').iterdir()):
                raise ValueError(
                    f'bank {self.bank} is empty (no image in train/images); fill it with '
                    '`earthsynth synthesize` before evaluating'
                )

    def _synthetic_spec(self, value: Mapping[str, Any]) -> dict[str, Any]:
        shorthand = 'class_path' not in value and 'init_args' not in value
        spec = _spec(value, _AUGMENTATION)
        args = spec['init_args']
        task = args.setdefault('task', self.config.task)
        if task != self.config.task:
            raise ValueError(
                f'synthetic.task is {task!r} but the experiment task is {self.config.task!r}'
            )
        if shorthand:
            if args.get('bank') is None and args.get('synthesizer') is None:
                if self.config.bank is None:
                    raise ValueError(
                        'synthetic: give bank: <folder>, a synthesizer, or a '
                        'top-level bank: <folder>'
                    )
                args['bank'] = self.config.bank
            if isinstance(args.get('bank'), str | Path):
                args['bank'] = {'class_path': _BANK, 'init_args': {'root': str(args['bank'])}}
            if args.get('bank') is not None:
                args.setdefault('source', 'bank' if args.get('synthesizer') is None else 'both')
                # label bank samples as the mini downstream datamodules label real ones
                if task == 'segmentation':
                    args.setdefault('unmapped_index', 0)
                else:
                    args.setdefault('class_rule', 'dominant')
        from torchgeo_earthsynth.transforms.synthetic_augmentation import SyntheticAugmentation

        _parse(spec, SyntheticAugmentation, 'synthetic')
        if not self.data_takes_synthetic and not args.get('classes'):
            raise ValueError(
                f'{self.data["class_path"]} takes no synthetic argument: give '
                'synthetic.init_args.classes (and dataset) so the augmentation '
                'can be attached to it'
            )
        return spec

    def synthetic_for(self, seed: int) -> dict[str, Any] | None:
        """The synthetic spec of one run: its draws seeded with the run's seed."""
        if self.synthetic is None:
            return None
        spec = copy.deepcopy(self.synthetic)
        spec['init_args']['seed'] = seed
        return spec


# ---------------------------------------------------------------------- datasets
class SyntheticTrainSet(Dataset[dict[str, Tensor]]):
    """A synthetic bank folder as a downstream training set, labelled like the real data.

    The bank is read with :class:`~torchgeo_earthsynth.datasets.EarthSynth180K` (its
    ``train`` split, full scenes), after merging the parts of a
    :class:`~torchgeo_earthsynth.bank.SyntheticBank` still being written. ``lut`` is the
    datamodule's vocabulary id per class (:func:`~torchgeo_earthsynth.vocabulary.label_map`),
    mapped back as the downstream datamodules do: for segmentation every vocabulary id maps
    to its class, other ids to ``fill``; for classification a sample's label is its dominant class
    (:func:`~torchgeo_earthsynth.datamodules.downstream.dominant_class`), and samples
    dominated by other classes are left out.

    .. versionadded:: 0.1
    """

    def __init__(self, root: str | Path, task: TaskName, lut: Tensor, fill: int = 0) -> None:
        """Initialize a new SyntheticTrainSet instance.

        Args:
            root: the bank folder (holding ``train/images`` and ``train/masks``).
            task: ``classification`` or ``segmentation``.
            lut: int64 [C] vocabulary id per downstream class.
            fill: class index of vocabulary ids outside the classes (segmentation).

        Raises:
            ValueError: if no bank sample has a dominant class among the classes
                (classification).
        """
        from torchgeo_earthsynth.datamodules.downstream import dominant_class, reverse_map

        if (Path(root) / 'train' / 'parts').is_dir():  # written by SyntheticBank: merge parts
            from torchgeo_earthsynth.bank import SyntheticBank

            SyntheticBank(root).consolidate()
        self.corpus = EarthSynth180K(root, split='train')
        self.task = task
        self.inverse = reverse_map(lut, fill=fill)
        self.items: list[tuple[int, int]] = []
        if task == 'segmentation':
            self.items = [(i, -1) for i in range(len(self.corpus))]
            return
        index_of = {int(v): i for i, v in reversed(list(enumerate(lut.tolist())))}
        for i in range(len(self.corpus)):
            dominant = dominant_class(self.corpus[i]['mask'])
            if dominant in index_of:
                self.items.append((i, index_of[dominant]))
        if not self.items:
            raise ValueError(
                f'bank {root}: no sample is dominated by a class of the '
                f'datamodule (vocabulary ids {lut.tolist()})'
            )

    def __len__(self) -> int:
        """Number of usable bank samples."""
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """One sample: ``image`` and ``mask`` (segmentation) or ``label`` (classification).

        Args:
            index: index of the sample.

        Returns:
            The sample dict.
        """
        i, label = self.items[index]
        sample = self.corpus[i]
        if self.task == 'segmentation':
            return {'image': sample['image'], 'mask': self.inverse[sample['mask']]}
        return {'image': sample['image'], 'label': torch.tensor(label)}


class _SetupHook:
    """Wraps a datamodule's ``setup`` to swap or subsample its training set after it."""

    def __init__(
        self,
        datamodule: LightningDataModule,
        train: Dataset[Any] | None,
        subset: int | float | None,
        seed: int,
    ) -> None:
        self.setup = datamodule.setup
        self.datamodule = datamodule
        self.train = train
        self.subset = subset
        self.seed = seed

    def __call__(self, stage: str) -> None:
        self.setup(stage)
        if stage != 'fit':
            return
        dm: Any = self.datamodule
        if self.train is not None:
            dm.train_dataset = self.train
        elif self.subset is not None:
            total = len(dm.train_dataset)
            count = self.subset if isinstance(self.subset, int) else round(self.subset * total)
            count = max(1, min(total, count))
            order = torch.randperm(total, generator=torch.Generator().manual_seed(self.seed))
            dm.train_dataset = Subset(dm.train_dataset, sorted(order[:count].tolist()))


# ---------------------------------------------------------------------- running
def _versions() -> dict[str, str]:
    import lightning
    import torchgeo

    return {
        'torch': torch.__version__,
        'torchgeo': torchgeo.__version__,
        'lightning': lightning.__version__,
    }


@contextmanager
def _quiet() -> Iterator[None]:
    """Hide Lightning's per-run banners and the num_workers hint while runs go by."""
    loggers = [logging.getLogger(name) for name in ('lightning.pytorch', 'lightning.fabric')]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', message='.*does not have many workers.*')
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _datamodule(plan: _Plan, arm: str, seed: int) -> tuple[LightningDataModule, Any]:
    """A fresh datamodule for one run and its synthetic augmentation (or None)."""
    spec = copy.deepcopy(plan.data)
    synthetic_spec = plan.synthetic_for(seed) if arm == 'real+synthetic' else None
    if synthetic_spec is not None and plan.data_takes_synthetic:
        spec['init_args']['synthetic'] = synthetic_spec
        dm = _instantiate(spec, LightningDataModule, 'data')
    else:
        dm = _instantiate(spec, LightningDataModule, 'data')
        if synthetic_spec is not None:
            from torchgeo_earthsynth.transforms.synthetic_augmentation import (
                SyntheticAugmentation,
                attach,
            )

            attach(dm, _instantiate(synthetic_spec, SyntheticAugmentation, 'synthetic'))
    synthetic = getattr(dm, 'train_aug', None) if synthetic_spec is not None else None
    return dm, synthetic


class PresentClassIoU(Metric):
    """mIoU over the classes present in the target: one definition, per-class IoU kept.

    Accumulates a confusion matrix; :meth:`compute` returns the mean IoU of the classes
    that occur in the accumulated targets (a class the split does not contain cannot be
    scored, and predicting it anyway costs the present classes' IoU through false
    positives). The last per-class IoU is kept in :attr:`per_class` (NaN where a class is
    neither present nor predicted, 0 where it is predicted but absent).

    .. versionadded:: 0.1
    """

    full_state_update = False
    confusion: Tensor

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        """Initialize a new PresentClassIoU instance.

        Args:
            num_classes: number of classes.
            ignore_index: target value to leave out, if any.
        """
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.per_class: Tensor = torch.full((num_classes,), float('nan'))
        zeros = torch.zeros(num_classes, num_classes, dtype=torch.long)
        self.add_state('confusion', default=zeros, dist_reduce_fx='sum')

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch.

        Args:
            preds: logits [B, C, H, W] or class indices [B, H, W].
            target: class indices [B, H, W].
        """
        if preds.ndim == target.ndim + 1:
            preds = preds.argmax(dim=1)
        keep = torch.ones_like(target, dtype=torch.bool)
        if self.ignore_index is not None:
            keep = target != self.ignore_index
        index = target[keep].long() * self.num_classes + preds[keep].long()
        counts = torch.bincount(index, minlength=self.num_classes**2)
        self.confusion += counts.reshape(self.num_classes, self.num_classes)

    def compute(self) -> Tensor:
        """The mean IoU over classes present in the targets (NaN if none is).

        Returns:
            A scalar tensor.
        """
        confusion = self.confusion.double()
        hits = confusion.diagonal()
        union = confusion.sum(0) + confusion.sum(1) - hits
        iou = torch.where(union > 0, hits / union.clamp(min=1), float('nan'))
        self.per_class = iou.float().cpu()
        present = confusion.sum(1) > 0
        return iou[present].mean().float() if bool(present.any()) else torch.tensor(float('nan'))


def _task(config: ExperimentConfig, dm: LightningDataModule) -> tuple[BaseTask, Any]:
    """A fresh TorchGeo task, and the :class:`PresentClassIoU` it tests with (or None)."""
    args = {**DEFAULT_MODELS[config.task], **config.model}
    if args.get('task') == 'multiclass' and args.get('num_classes') is None:
        classes = getattr(dm, 'classes', None)
        if classes is None:
            raise ValueError(
                f'model.num_classes is required: {type(dm).__name__} has no '
                'classes attribute to count'
            )
        args['num_classes'] = len(classes)
    try:
        task = _TASKS[config.task](**args)
    except TypeError as error:
        raise ValueError(f'bad model init args {sorted(config.model)}: {error}') from error
    miou = None
    if config.task == 'segmentation' and args['task'] == 'multiclass':
        miou = PresentClassIoU(args['num_classes'], ignore_index=args.get('ignore_index'))
        test_metrics: MetricCollection = task.test_metrics  # type: ignore[assignment]
        test_metrics.add_metrics({'mIoU': miou})
    return task, miou


def _run(plan: _Plan, arm: str, seed: int, folder: Path) -> RunResult:
    config = plan.config
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    seed_everything(seed, workers=True, verbose=False)
    dm, synthetic = _datamodule(plan, arm, seed)
    train: Dataset[Any] | None = None
    if arm == 'synthetic-only':
        lut = getattr(dm, 'lut', None)
        if not isinstance(lut, Tensor):
            raise ValueError(
                f"arm 'synthetic-only' needs a datamodule with a lut (vocabulary "
                f'id per class) to label bank samples; {type(dm).__name__} has '
                'none'
            )
        assert plan.bank is not None
        train = SyntheticTrainSet(plan.bank, config.task, lut)
    subset = config.train_subset if arm != 'synthetic-only' else None
    dm.setup = _SetupHook(dm, train, subset, seed)  # type: ignore[method-assign]
    task, miou = _task(config, dm)
    logger = CSVLogger(folder, name='', version='')
    trainer = Trainer(
        **plan.trainer, logger=logger, enable_checkpointing=False, default_root_dir=folder
    )
    trainer.fit(task, datamodule=dm)
    train_samples = len(dm.train_dataset)  # type: ignore[attr-defined]
    if 0 < trainer.max_steps != trainer.global_step:
        warnings.warn(
            f'{arm} seed {seed}: trained {trainer.global_step} of max_steps '
            f'{trainer.max_steps} steps (max_epochs {trainer.max_epochs} or the data ran out); '
            'runs.csv records the steps run',
            stacklevel=2,
        )
    if trainer.global_step == 0:
        raise ValueError(
            f'{arm} seed {seed}: no training step ran ({train_samples} training '
            f'samples); lower data batch_size (the last partial batch is '
            'dropped) or raise train_subset'
        )
    results = trainer.test(task, datamodule=dm, verbose=False)
    metrics = {k: float(v) for k, v in results[0].items()}
    metric = config.metric_name
    if metric not in metrics:
        raise ValueError(f'metric {metric!r} was not logged by the test; logged: {sorted(metrics)}')
    stats = dict(synthetic.stats) if synthetic is not None else None
    per_class = None
    if miou is not None:
        classes = getattr(dm, 'classes', None) or [str(i) for i in range(miou.num_classes)]
        per_class = {str(c): float(v) for c, v in zip(classes, miou.per_class.tolist())}
    return RunResult(
        arm,
        seed,
        metrics[metric],
        metrics,
        train_samples,
        stats,
        time.perf_counter() - start,
        folder,
        steps=trainer.global_step,
        per_class_iou=per_class,
    )


def summarize(runs: Sequence[RunResult], arms: Sequence[str]) -> dict[str, ArmSummary]:
    """Mean, spread and difference to ``real`` of each arm.

    Args:
        runs: the runs.
        arms: the arms, in report order.

    Returns:
        Per arm (those with runs), its :class:`ArmSummary`.

    .. versionadded:: 0.1
    """
    by_arm = {arm: {r.seed: r.value for r in runs if r.arm == arm} for arm in arms}
    real = by_arm.get('real') or {}
    real_mean = float(np.mean(list(real.values()))) if real else None
    out: dict[str, ArmSummary] = {}
    for arm, values in by_arm.items():
        if not values:
            continue
        array = np.array(list(values.values()), dtype=np.float64)
        paired = {s: v - real[s] for s, v in values.items() if s in real}
        diffs = np.array(list(paired.values()), dtype=np.float64)
        out[arm] = ArmSummary(
            arm=arm,
            n=len(array),
            mean=float(array.mean()),
            std=float(array.std(ddof=1)) if len(array) > 1 else None,
            diff=float(array.mean()) - real_mean if real_mean is not None else None,
            paired_diffs=paired,
            paired_diff_std=float(diffs.std(ddof=1)) if len(diffs) > 1 else None,
            wins=int((diffs > 0).sum()),
        )
    return out


def plot_summary(result: ExperimentResult) -> Figure:
    """Bar plot of each arm's mean metric, std error bars and the per-seed values.

    Args:
        result: the experiment result.

    Returns:
        A matplotlib Figure (not attached to pyplot).

    .. versionadded:: 0.1
    """
    summaries = list(result.summary.values())
    fig = Figure(figsize=(max(4.5, 1.8 + 1.6 * len(summaries)), 4), layout='constrained')
    ax = fig.add_subplot()
    x = np.arange(len(summaries))
    colours = {'real': '#4c72b0', 'real+synthetic': '#55a868', 'synthetic-only': '#dd8452'}
    ax.bar(
        x,
        [s.mean for s in summaries],
        yerr=[s.std or 0.0 for s in summaries],
        capsize=6,
        color=[colours.get(s.arm, '#8172b2') for s in summaries],
        alpha=0.85,
    )
    for i, s in enumerate(summaries):
        values = [r.value for r in result.runs if r.arm == s.arm]
        ax.scatter(np.full(len(values), x[i]), values, color='black', s=12, zorder=3)
        if s.diff is not None and s.arm != 'real':
            ax.annotate(
                f'{s.diff:+.3f}',
                (x[i], s.mean + (s.std or 0.0)),
                ha='center',
                va='bottom',
                xytext=(0, 4),
                textcoords='offset points',
            )
    ax.set_xticks(x, [f'{s.arm}\n(n={s.n})' for s in summaries])
    ax.set_ylabel(result.metric)
    top = max(max(s.mean + (s.std or 0.0) for s in summaries), 1e-6)
    ax.set_ylim(0, min(1.0, top * 1.2) if top <= 1.0 else top * 1.2)
    ax.set_title(
        f'{result.config.task}: {result.metric}\nmean ± std over seeds, diff vs real above bars',
        fontsize='medium',
    )
    return fig


def learning_curve(run: RunResult, column: str = 'train_loss') -> tuple[np.ndarray, np.ndarray]:
    """A logged metric of a run against the step, read from its ``metrics.csv``.

    Args:
        run: the run.
        column: the logged metric (``train_loss``, ``val_loss``...).

    Returns:
        Steps and values (empty arrays if the column was never logged).

    .. versionadded:: 0.1
    """
    steps: list[float] = []
    values: list[float] = []
    with (run.folder / 'metrics.csv').open(newline='') as f:
        for row in csv.DictReader(f):
            if row.get(column):
                steps.append(float(row['step']))
                values.append(float(row[column]))
    return np.array(steps), np.array(values)


def plot_learning_curves(runs: Sequence[RunResult]) -> Figure:
    """Training loss (smoothed) and validation loss against the step, one colour per arm.

    Args:
        runs: the runs (each seed a thin line; training loss smoothed over 10 steps).

    Returns:
        A matplotlib Figure (not attached to pyplot).

    .. versionadded:: 0.1
    """
    fig = Figure(figsize=(10, 4), layout='constrained')
    axes = fig.subplots(1, 2)
    colours = {'real': '#4c72b0', 'real+synthetic': '#55a868', 'synthetic-only': '#dd8452'}
    labelled: set[tuple[int, str]] = set()
    for run in runs:
        for i, column in enumerate(('train_loss', 'val_loss')):
            steps, values = learning_curve(run, column)
            if not len(values):
                continue
            if column == 'train_loss' and len(values) >= 10:
                values = np.convolve(values, np.ones(10) / 10, mode='valid')
                steps = steps[9:]
            first = (i, run.arm) not in labelled
            labelled.add((i, run.arm))
            axes[i].plot(
                steps,
                values,
                color=colours.get(run.arm, '#8172b2'),
                alpha=0.7,
                lw=1,
                label=run.arm if first else None,
            )
    for ax, title in zip(axes, ('training loss (mean of 10 steps)', 'validation loss')):
        ax.set_title(title)
        ax.set_xlabel('step')
        ax.set_yscale('log')
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle('learning curves, one line per seed')
    return fig


def write_report(result: ExperimentResult, folder: str | Path) -> dict[str, Path]:
    """Write ``results.json``, ``runs.csv``, ``summary.csv`` and ``results.png``.

    Args:
        result: the experiment result.
        folder: the output folder.

    Returns:
        The written files by kind (``json``, ``runs_csv``, ``summary_csv``, ``plot``,
        ``curves``).

    .. versionadded:: 0.1
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        'json': folder / 'results.json',
        'runs_csv': folder / 'runs.csv',
        'summary_csv': folder / 'summary.csv',
        'plot': folder / 'results.png',
    }

    # JSON has no NaN: write null
    payload = json.loads(json.dumps(result.to_dict(), default=str), parse_constant=lambda _: None)
    files['json'].write_text(json.dumps(payload, indent=2) + '\n')

    # one IoU definition in the table: TorchGeo's micro one stays in results.json only
    unreported = {'test_MulticlassJaccardIndex'} if result.metric == 'test_mIoU' else set()
    reported = {result.metric}  # already the third column
    metric_keys = sorted({k for run in result.runs for k in run.metrics} - unreported - reported)
    stat_keys = sorted({k for run in result.runs for k in run.synthetic_stats or {}})
    with files['runs_csv'].open('w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                'arm',
                'seed',
                result.metric,
                'train_samples',
                'steps',
                'seconds',
                *metric_keys,
                *(f'synthetic_{k}' for k in stat_keys),
            ]
        )
        for run in result.runs:
            stats = run.synthetic_stats or {}
            writer.writerow(
                [
                    run.arm,
                    run.seed,
                    run.value,
                    run.train_samples,
                    run.steps,
                    round(run.seconds, 3),
                    *(run.metrics.get(k) for k in metric_keys),
                    *(stats.get(k, '') for k in stat_keys),
                ]
            )
    with files['summary_csv'].open('w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(
            [
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
        )
        for s in result.summary.values():
            paired_mean = float(np.mean(list(s.paired_diffs.values()))) if s.paired_diffs else None
            writer.writerow(
                [
                    '' if v is None else v
                    for v in (
                        s.arm,
                        result.metric,
                        s.n,
                        s.mean,
                        s.std,
                        s.diff,
                        paired_mean,
                        s.paired_diff_std,
                        s.wins,
                    )
                ]
            )
    fig = plot_summary(result)
    fig.savefig(files['plot'], dpi=120)
    files['curves'] = folder / 'learning_curves.png'
    plot_learning_curves(result.runs).savefig(files['curves'], dpi=110)
    return files


def run_experiment(config: ExperimentConfig | Mapping[str, Any] | str | Path) -> ExperimentResult:
    """Train and test every arm over every seed, then write the report.

    Each run seeds everything (:func:`lightning.pytorch.seed_everything`), builds a fresh
    datamodule, TorchGeo task and Trainer (CSV logs in ``<output>/runs/<arm>/seed_<seed>``,
    no checkpoints), fits, and tests the final model. The ``real`` arm trains without the
    synthetic augmentation, ``real+synthetic`` with it in the datamodule's ``train_aug``
    slot, and ``synthetic-only`` on the bank alone (:class:`SyntheticTrainSet`); all are
    validated and tested on the same real splits (the mini datamodules test on held-out
    scenes disjoint from the validation ones). Each run trains ``max_steps`` steps when
    given (``max_epochs`` is lifted unless set too; ``runs.csv`` records the steps run).

    Args:
        config: an :class:`ExperimentConfig`, a mapping of its fields, or a YAML file.

    Returns:
        The :class:`ExperimentResult` (also written to ``config.output``).

    Raises:
        ValueError: if the config is invalid (checked before the first run) or the metric
            is not logged.

    .. versionadded:: 0.1
    """
    config = load_config(config)
    plan = _Plan(config)
    output = Path(config.output)
    jobs = [(arm, seed) for seed in config.seeds for arm in plan.arms]
    runs: list[RunResult] = []
    bar = tqdm(jobs, desc='evaluate', unit='run', disable=not config.progress)
    with _quiet():
        for arm, seed in bar:
            bar.set_postfix_str(f'{arm} seed {seed}')
            folder = output / 'runs' / arm.replace('+', '_') / f'seed_{seed}'
            runs.append(_run(plan, arm, seed, folder))
    bar.close()
    result = ExperimentResult(config, config.metric_name, runs, summarize(runs, plan.arms))
    result.files = write_report(result, output)
    return result


def main(argv: Sequence[str] | None = None) -> None:
    """``earthsynth evaluate --config <yaml> [--field value ...]``.

    Args:
        argv: command-line arguments after ``evaluate``.

    .. versionadded:: 0.1
    """
    parser = _config_parser()
    parser.exit_on_error = True
    cfg = parser.parse_args(list(argv) if argv is not None else None)
    try:
        config = _from_namespace(cfg)
        if config.budgets is not None:
            from .data_efficiency import run_data_efficiency

            study = run_data_efficiency(config, config.budgets)
            print(study.format_table())
            print(f'report: {study.files["table"].parent}')
            return
        result = run_experiment(config)
    except ValueError as error:
        parser.error(str(error))
    print(result.format_table())
    print(f'report: {result.files["json"].parent}')


__all__ = (
    'ARMS',
    'DEFAULT_DATA',
    'DEFAULT_METRICS',
    'DEFAULT_MODELS',
    'DEFAULT_TRAINER',
    'ArmSummary',
    'ExperimentConfig',
    'ExperimentResult',
    'PresentClassIoU',
    'RunResult',
    'SyntheticTrainSet',
    'learning_curve',
    'load_config',
    'main',
    'plot_learning_curves',
    'plot_summary',
    'run_experiment',
    'summarize',
    'write_report',
)
