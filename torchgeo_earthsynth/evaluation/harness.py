# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Downstream experiment harness: is synthetic data ready for image recognition?"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor
from torch.utils.data import Dataset
from torchmetrics import MetricCollection
from tqdm.auto import tqdm

from torchgeo_earthsynth.compat import BaseTask
from torchgeo_earthsynth.encodings.registry import encoding_for
from torchgeo_earthsynth.evaluation.config import (
    ARMS,
    DEFAULT_DATA,
    DEFAULT_METRICS,
    DEFAULT_MODELS,
    DEFAULT_TRAINER,
    TASKS,
    ExperimentConfig,
    TaskName,
    _instantiate,
    _Plan,
    load_config,
)
from torchgeo_earthsynth.evaluation.data import SyntheticTrainSet, _SetupHook
from torchgeo_earthsynth.evaluation.report import (
    learning_curve,
    plot_learning_curves,
    plot_summary,
    write_report,
)
from torchgeo_earthsynth.evaluation.results import (
    ArmSummary,
    ExperimentResult,
    RunResult,
    summarize,
)
from torchgeo_earthsynth.metrics.mask_fidelity import PresentClassIoU


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
            from torchgeo_earthsynth.transforms import SyntheticAugmentation, attach

            attach(dm, _instantiate(synthetic_spec, SyntheticAugmentation, 'synthetic'))
    synthetic = getattr(dm, 'train_aug', None) if synthetic_spec is not None else None
    return dm, synthetic


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
        task = TASKS[config.task](**args)
    except TypeError as error:
        raise ValueError(f'bad model init args {sorted(config.model)}: {error}') from error
    miou = None
    if config.task == 'segmentation' and args['task'] == 'multiclass':
        miou = PresentClassIoU(args['num_classes'], ignore_index=args.get('ignore_index'))
        test_metrics: MetricCollection = task.test_metrics  # type: ignore[assignment]
        test_metrics.add_metrics({'mIoU': miou})
    return task, miou


def _synthetic_train_set(bank: Path, task: TaskName, dm: LightningDataModule) -> SyntheticTrainSet:
    """The bank as the training set of a ``synthetic-only`` run, labelled like ``dm``'s data.

    The labels map back through the datamodule's ``lut`` (vocabulary id per class; the mini
    datamodules have one); a detection datamodule of a registered dataset (TorchGeo's
    ``VHR10DataModule``) maps through that dataset's encoding, and its samples are resized
    to the datamodule's ``patch_size``.
    """
    from torchgeo_earthsynth.transforms.synthetic_scale import registered_dataset

    lut = getattr(dm, 'lut', None)
    if not isinstance(lut, Tensor) and task == 'detection':
        name = registered_dataset(dm, None)
        lut = encoding_for(name).lut() if name is not None else None
    if not isinstance(lut, Tensor):
        raise ValueError(
            f"arm 'synthetic-only' needs a datamodule with a lut (vocabulary id per class) "
            f'to label bank samples; {type(dm).__name__} has none'
            + (' and loads no registered dataset' if task == 'detection' else '')
        )
    size = getattr(dm, 'patch_size', None) if task == 'detection' else None
    return SyntheticTrainSet(bank, task, lut, size=size)


def _run(plan: _Plan, arm: str, seed: int, folder: Path) -> RunResult:
    config = plan.config
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    seed_everything(seed, workers=True, verbose=False)
    dm, synthetic = _datamodule(plan, arm, seed)
    train: Dataset[Any] | None = None
    if arm == 'synthetic-only':
        assert plan.bank is not None
        train = _synthetic_train_set(plan.bank, config.task, dm)
    subset = config.train_subset if arm != 'synthetic-only' else None
    setup = _SetupHook(dm, train, subset, seed, config.epoch_samples)
    dm.setup = setup  # type: ignore[method-assign]
    task, miou = _task(config, dm)
    logger = CSVLogger(folder, name='', version='')
    trainer = Trainer(
        **plan.trainer, logger=logger, enable_checkpointing=False, default_root_dir=folder
    )
    trainer.fit(task, datamodule=dm)
    train_samples = setup.train_samples
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
    'plot_learning_curves',
    'plot_summary',
    'run_experiment',
    'summarize',
    'write_report',
)
