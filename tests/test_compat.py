# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""TorchGeo compatibility: the names compat.py exports and no private TorchGeo import anywhere."""

import ast
import importlib
import re
import sys
from pathlib import Path

import pytest
import torchgeo
import yaml
from lightning.pytorch import LightningDataModule, LightningModule

from torchgeo_earthsynth import compat

REPO = Path(__file__).resolve().parents[1]
# Build outputs and run outputs are not our code (hidden folders such as .venv are skipped too).
SKIPPED_DIRS = frozenset({'build', 'dist', 'outputs', 'lightning_logs'})
TASK_MODULES = ('torchgeo.trainers', 'torchgeo.tasks')
# ``torchgeo.datasets.utils._x`` in code, strings or YAML (``__dunder__`` names are public)
PRIVATE_PATH = re.compile(r'\btorchgeo(?:\.\w+)*\._(?!_)\w*')


def _repo_files(*suffixes: str) -> list[Path]:
    return sorted(
        path
        for path in REPO.rglob('*')
        if path.suffix in suffixes
        and path.is_file()
        and not any(
            part in SKIPPED_DIRS or part.startswith('.') or part.endswith('.egg-info')
            for part in path.relative_to(REPO).parts[:-1]
        )
        and path.relative_to(REPO).parts[0] != 'data'  # the git-ignored /data/ downloads
    )


def _is_task_module(module: str) -> bool:
    return any(module == name or module.startswith(f'{name}.') for name in TASK_MODULES)


def torchgeo_import_problems(source: str, filename: str) -> list[str]:
    """Private TorchGeo names and (outside compat.py) task-module imports in one Python file."""
    problems = [
        f'{filename}:{source.count(chr(10), 0, m.start()) + 1}: private TorchGeo name {m[0]!r}'
        for m in PRIVATE_PATH.finditer(source)
    ]
    task_imports_allowed = filename.replace('\\', '/').endswith('torchgeo_earthsynth/compat.py')
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
            names = []
        else:
            continue
        for module in modules:
            if module != 'torchgeo' and not module.startswith('torchgeo.'):
                continue
            where = f'{filename}:{node.lineno}'
            problems += [
                f'{where}: private TorchGeo name {name!r} imported from {module}'
                for name in names
                if name.startswith('_') and not name.startswith('__')
            ]
            if _is_task_module(module) and not task_imports_allowed:
                problems.append(f'{where}: import {module} through torchgeo_earthsynth.compat')
    return problems


def test_torchgeo_version_matches_python() -> None:
    print(f'TorchGeo {torchgeo.__version__} on Python {sys.version.split()[0]}')
    assert compat.TORCHGEO_VERSION == torchgeo.__version__
    major, minor = compat.TORCHGEO_VERSION_TUPLE
    assert torchgeo.__version__.startswith(f'{major}.{minor}.')
    # 0.9 dropped Python 3.11; 3.12+ resolves to 0.10 from the lock (0.8 under lowest-direct)
    if sys.version_info < (3, 12):
        assert compat.TORCHGEO_VERSION_TUPLE == (0, 8)
    assert (0, 8) <= compat.TORCHGEO_VERSION_TUPLE < (0, 11)


def test_task_names_are_the_current_ones() -> None:
    if compat.TORCHGEO_VERSION_TUPLE >= (0, 10):
        tasks = importlib.import_module('torchgeo.tasks')
        expected = (tasks.BaseTask, tasks.Classification, tasks.SemanticSegmentation)
    else:
        trainers = importlib.import_module('torchgeo.trainers')
        expected = (
            trainers.BaseTask,
            trainers.ClassificationTask,
            trainers.SemanticSegmentationTask,
        )
    assert (compat.BaseTask, compat.ClassificationTask, compat.SemanticSegmentationTask) == expected
    assert issubclass(compat.SemanticSegmentationTask, compat.BaseTask)
    assert issubclass(compat.ClassificationTask, compat.BaseTask)


def test_segmentation_metric_names_are_the_tasks() -> None:
    task = compat.SemanticSegmentationTask(model='fcn', num_filters=1, num_classes=2)
    names = {f'test_{name}' for name in compat.SEGMENTATION_MICRO_METRICS}
    assert names <= set(task.test_metrics.keys())


@pytest.mark.parametrize('config', _repo_files('.yaml'), ids=lambda p: p.name)
def test_config_class_paths_are_tasks_and_datamodules(config: Path) -> None:
    """Every model/data class_path imports and subclasses the bases both CLIs accept."""
    loaded = yaml.safe_load(config.read_text())
    # `earthsynth synthesize` predicts with any Lightning module and datamodule (SynthesizerModule
    # wraps a release, BoxLayoutDataModule reads layouts); the others also run on `torchgeo`.
    bases = (compat.BaseTask, compat.BaseDataModule)
    if config.name.startswith('synthesize_'):
        bases = (LightningModule, LightningDataModule)
    for key, base in zip(('model', 'data'), bases):
        entry = loaded.get(key) if isinstance(loaded, dict) else None
        if not isinstance(entry, dict) or 'class_path' not in entry:
            continue
        module, _, name = entry['class_path'].rpartition('.')
        assert module, f'{config.name}: {key}.class_path needs a dotted import path'
        cls = getattr(importlib.import_module(module), name)
        assert issubclass(cls, base), f'{config.name}: {key} {cls} is not a {base}'


def test_no_private_or_task_imports_outside_compat() -> None:
    problems = [
        problem
        for path in _repo_files('.py')
        if path != Path(__file__).resolve()  # this file's examples are bad on purpose
        for problem in torchgeo_import_problems(path.read_text(), str(path.relative_to(REPO)))
    ]
    problems += [
        f'{path.relative_to(REPO)}: private TorchGeo name {m[0]!r}'
        for path in _repo_files('.yaml', '.yml', '.md', '.toml')
        for m in PRIVATE_PATH.finditer(path.read_text())
    ]
    assert not problems, '\n'.join(problems)
    assert Path(compat.__file__).resolve() in {p.resolve() for p in _repo_files('.py')}


@pytest.mark.parametrize(
    ('source', 'found'),
    [
        ('from torchgeo.datasets.utils import _list_dict_to_dict\n', 'private'),
        (
            'from torchgeo.transforms import (\n    AugmentationSequential,\n    _Helper,\n)\n',
            'private',
        ),
        ('import torchgeo.datamodules._utils\n', 'private'),
        ("x = 'torchgeo.datamodules.utils._collate'\n", 'private'),
        ('from torchgeo.trainers import BaseTask\n', 'compat'),
        ('from torchgeo.tasks.base import BaseTask\n', 'compat'),
        ('import torchgeo.trainers\n', 'compat'),
        ('from torchgeo.datasets import LoveDA\nprint(torchgeo.__version__)\n', None),
        ('from torchgeo_earthsynth.compat import BaseTask\n', None),
    ],
)
def test_the_import_check_finds_what_it_should(source: str, found: str | None) -> None:
    problems = torchgeo_import_problems(source, 'pkg/module.py')
    assert [found] * len(problems) == ['private' if 'private' in p else 'compat' for p in problems]
    assert bool(problems) == (found is not None)
    # compat.py may import the task modules, never a private name
    in_compat = torchgeo_import_problems(source, 'torchgeo_earthsynth/compat.py')
    assert len(in_compat) == (len(problems) if found == 'private' else 0)


@pytest.mark.parametrize('task_name', ['SemanticSegmentationTask', 'ClassificationTask', None])
def test_torchgeo_tasks_get_tensor_only_batches(mini_root: Path, task_name: str | None) -> None:
    """TorchGeo 0.10's tasks unbind every batch value to plot; strings stay for our modules."""
    from lightning.pytorch import LightningModule, Trainer
    from torch import Tensor
    from torchgeo.datasets import unbind_samples

    from torchgeo_earthsynth.datamodules import EarthSynthMiniDataModule

    dm = EarthSynthMiniDataModule(
        root=mini_root.parent, tile_size=32, num_train=24, num_val=8, batch_size=2
    )
    dm.setup('fit')
    batch = next(iter(dm.val_dataloader()))
    assert isinstance(batch['prompt'], list)  # what TorchGeo 0.10's unbind_samples cannot stack
    module = LightningModule()
    if task_name == 'SemanticSegmentationTask':
        module = compat.SemanticSegmentationTask(model='fcn', num_filters=4, num_classes=3)
    elif task_name == 'ClassificationTask':
        module = compat.ClassificationTask(model='resnet18', num_classes=3)
    trainer = Trainer(accelerator='cpu', logger=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    trainer.validating = True
    dm.trainer = trainer
    out = dm.on_after_batch_transfer(dict(batch), 0)
    if task_name:
        assert set(out) == {k for k, v in batch.items() if isinstance(v, Tensor)}
        assert {'image', 'mask'} <= set(out)
        samples = unbind_samples(dict(out))
        assert len(samples) == 2 and samples[0]['image'].shape == (3, 32, 32)
    else:
        assert set(out) == set(batch) and out['prompt'] == batch['prompt']
