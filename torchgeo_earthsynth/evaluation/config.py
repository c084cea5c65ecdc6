# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Downstream experiment config: its fields, defaults and checks, resolved into per-run specs."""

from __future__ import annotations

import copy
import importlib
import inspect
from argparse import ArgumentError
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, get_args

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace  # type: ignore[attr-defined]
from lightning.pytorch import LightningDataModule

from torchgeo_earthsynth.bank.change_pairs import ChangePairBank
from torchgeo_earthsynth.compat import (
    CHANGE_IOU_METRIC,
    BaseTask,
    ChangeDetectionTask,
    ClassificationTask,
    ObjectDetectionTask,
    SemanticSegmentationTask,
)

TaskName = Literal['classification', 'segmentation', 'detection', 'change']
Arm = Literal['real', 'real+synthetic', 'synthetic-only']

#: The arms of an experiment, in report order.
ARMS: Final[tuple[str, ...]] = get_args(Arm)
#: Test metric reported per task: TorchGeo's overall accuracy, and the mIoU the harness adds
#: (:class:`~torchgeo_earthsynth.metrics.PresentClassIoU`: IoU per class, averaged over the
#: classes present in the test split). TorchGeo's micro-averaged
#: ``test_MulticlassJaccardIndex`` (pixels pooled over classes, dominated by frequent ones)
#: stays in ``results.json`` but is not reported.
DEFAULT_METRICS: Final[dict[str, str]] = {
    'classification': 'test_OverallAccuracy',
    'segmentation': 'test_mIoU',
    'detection': 'test_map',  # torchmetrics' MeanAveragePrecision (mAP@[.5:.95]), TorchGeo's
    'change': CHANGE_IOU_METRIC,  # IoU of the change class (TorchGeo's, binary)
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
    'detection': {  # NWPU VHR-10: 10 classes + background
        'model': 'faster-rcnn',
        'backbone': 'resnet18',
        'weights': None,
        'in_channels': 3,
        'num_classes': 11,
        'trainable_layers': 5,
        'lr': 1e-3,
        'patience': 5,
    },
    'change': {  # LEVIR-CD style: before and after stacked as 6 channels, binary change
        'model': 'unet',
        'backbone': 'resnet18',
        'weights': None,
        'in_channels': 3,
        'task': 'binary',
        'loss': 'bce',
        'lr': 1e-3,
        'patience': 5,
    },
}
#: Default datamodule per experiment task.
DEFAULT_DATA: Final[dict[str, str]] = {
    'classification': 'torchgeo_earthsynth.datamodules.downstream.MiniClassificationDataModule',
    'segmentation': 'torchgeo_earthsynth.datamodules.downstream.MiniSegmentationDataModule',
    'detection': 'torchgeo_earthsynth.datamodules.detection.SyntheticVHR10DataModule',
    'change': 'torchgeo_earthsynth.datamodules.change.MiniChangeDetectionDataModule',
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
_CHANGE_PAIRS: Final = 'torchgeo_earthsynth.transforms.synthetic_change.SyntheticChangePairs'
_BANK: Final = 'torchgeo_earthsynth.bank.SyntheticBank'
TASKS: Final[dict[str, type[BaseTask]]] = {
    'classification': ClassificationTask,
    'segmentation': SemanticSegmentationTask,
    'detection': ObjectDetectionTask,
    'change': ChangeDetectionTask,
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
        task: ``classification`` (reports overall accuracy), ``segmentation`` (mIoU) or
            ``detection`` (mAP, torchmetrics' ``MeanAveragePrecision`` as TorchGeo's
            ``ObjectDetectionTask`` logs it; data: VHR-10 by default, give its ``root``).
        model: init args of TorchGeo's ``ClassificationTask`` / ``SemanticSegmentationTask``
            / ``ObjectDetectionTask``, over :data:`DEFAULT_MODELS`; ``num_classes`` defaults
            to the datamodule's ``len(classes)`` (detection: 11, VHR-10's).
        data: the datamodule as ``class_path``/``init_args``, or just init args of the
            default one (:data:`DEFAULT_DATA`). A ``synthetic`` init arg in it is taken out
            and used as :attr:`synthetic` (so the ``real`` arm never sees it).
        synthetic: the synthetic augmentation of the ``real+synthetic`` arm: a
            ``SyntheticAugmentation`` as ``class_path``/``init_args``, or just its init args,
            where ``bank`` may be a folder (read with ``SyntheticBank``); with no bank and no
            synthesizer, :attr:`bank` is drawn from. Its ``task`` and ``seed`` are set by
            the harness (the run's seed).
        bank: a synthetic bank folder in the EarthSynth-180K layout (``train/images``,
            ``train/masks``): the ``synthetic-only`` arm trains on all of it; for ``change``,
            a :class:`~torchgeo_earthsynth.bank.ChangePairBank` (LEVIR-CD's layout) that
            the ``real+synthetic`` arm's pairs are drawn from.
        arms: arms to run, from :data:`ARMS`; None runs every arm the config allows
            (``real``, ``real+synthetic`` with a synthetic source, ``synthetic-only`` with
            a bank).
        seeds: one run per arm and seed; the same seed gives every arm the same model
            initialisation, data order and real training subset (paired comparison).
        metric: logged test metric to report (default :data:`DEFAULT_METRICS`).
        train_subset: emulate label scarcity: keep this many real training samples (int) or
            this share of them (float in (0, 1]), drawn per seed; None keeps all.
        epoch_samples: an epoch draws at least this many training samples: a smaller
            training set (a small budget) is repeated within the epoch, so the validation
            that TorchGeo's plateau scheduler needs once an epoch does not run after every
            step; the steps, samples and ``train_samples`` are unchanged. None: one pass.
        budgets: a data-efficiency study instead of one experiment: real training scenes
            per run (null: all), each run like ``train_subset``
            (:func:`~torchgeo_earthsynth.evaluation.run_data_efficiency`); the CLI
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
    epoch_samples: int | None = None
    budgets: list[int | None] | None = None
    trainer: dict[str, Any] = field(default_factory=dict)
    output: str = 'outputs/evaluate'
    progress: bool = True

    def __post_init__(self) -> None:
        """Check the fields.

        Raises:
            ValueError: naming the field and what was expected.
        """
        if self.task not in TASKS:
            raise ValueError(f'task must be one of {sorted(TASKS)}, got {self.task!r}')
        for name in ('model', 'data', 'synthetic'):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Mapping):
                raise ValueError(f'{name} must be a mapping, got {type(value).__name__}')
        has_synthetic = self.synthetic is not None or _nested_synthetic(self.data) is not None
        if self.arms is None:
            self.arms = ['real']
            if has_synthetic or self.bank is not None:
                self.arms.append('real+synthetic')
            if self.bank is not None and self.task != 'change':
                self.arms.append('synthetic-only')
        if self.task == 'change' and 'synthetic-only' in self.arms:
            raise ValueError(
                "task 'change' has no 'synthetic-only' arm: a bank of change pairs "
                "(ChangePairBank) fills the 'real+synthetic' arm's batches"
            )
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
        if isinstance(subset, float) and subset > 1 and subset.is_integer():
            # a count: jsonargparse may hand `int | float` fields over as floats (seen after
            # another LightningCLI run in the same process on the lowest-direct versions)
            subset = self.train_subset = int(subset)
        if isinstance(subset, bool) or (
            subset is not None
            and not (isinstance(subset, int) and subset >= 1)
            and not (isinstance(subset, float) and 0.0 < subset <= 1.0)
        ):
            raise ValueError(
                'train_subset must be a sample count >= 1 (int) or a share in '
                f'(0, 1] (float), got {subset!r}'
            )
        if self.epoch_samples is not None and not (
            isinstance(self.epoch_samples, int) and self.epoch_samples >= 1
        ):
            raise ValueError(f'epoch_samples must be a count >= 1, got {self.epoch_samples!r}')
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
        if self.bank is not None and config.task == 'change' and self.synthetic:
            if not len(ChangePairBank(self.bank)):
                raise ValueError(
                    f"bank {self.bank} holds no change pair (A/, B/, label/ in LEVIR-CD's "
                    'layout); fill it with fill_change_bank before evaluating'
                )
        elif self.bank is not None and ('synthetic-only' in self.arms or self.synthetic):
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
        if self.config.task == 'change':
            return self._change_pairs_spec(value)
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
                elif task == 'classification':
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

    def _change_pairs_spec(self, value: Mapping[str, Any]) -> dict[str, Any]:
        from torchgeo_earthsynth.transforms.synthetic_change import SyntheticChangePairs

        spec = _spec(value, _CHANGE_PAIRS)
        args = spec['init_args']
        if args.get('synthesizer') is None and args.get('bank') is None:
            args['bank'] = self.config.bank  # the top-level bank (None: refused by the class)
        _parse(spec, SyntheticChangePairs, 'synthetic')
        if not self.data_takes_synthetic:
            raise ValueError(
                f'{self.data["class_path"]} takes no synthetic argument: change pairs need a '
                'datamodule with a synthetic slot (e.g. MiniChangeDetectionDataModule)'
            )
        return spec

    def synthetic_for(self, seed: int) -> dict[str, Any] | None:
        """The synthetic spec of one run: its draws seeded with the run's seed."""
        if self.synthetic is None:
            return None
        spec = copy.deepcopy(self.synthetic)
        spec['init_args']['seed'] = seed
        return spec


__all__ = (
    'ARMS',
    'DEFAULT_DATA',
    'DEFAULT_METRICS',
    'DEFAULT_MODELS',
    'DEFAULT_TRAINER',
    'RESERVED_TRAINER_ARGS',
    'TASKS',
    'Arm',
    'ExperimentConfig',
    'TaskName',
    'load_config',
)
