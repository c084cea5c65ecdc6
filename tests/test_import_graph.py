# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The package's import graph: no circles, and no stage importing a later one.

Every import counts: module level, inside functions and under ``TYPE_CHECKING`` (a circle
broken only by importing late is still a circle).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Folder -> the import name it is installed as (pyproject's ``package-dir``).
FOLDERS = {
    'torchgeo_earthsynth': 'torchgeo_earthsynth',
    'datamodules': 'torchgeo_earthsynth.datamodules',
    'lightning_modules': 'torchgeo_earthsynth.lightning_modules',
    'transforms': 'torchgeo_earthsynth.transforms',
}

#: The flow of data (DESIGN.md), earliest first: a module may import its own stage or an
#: earlier one, never a later one. Entries are names under ``torchgeo_earthsynth`` (the
#: longest that matches a module wins); the CLI modules may import anything.
STAGES: tuple[tuple[str, ...], ...] = (
    # what every stage shares: the vocabulary, conditions, encodings, boxes, degradation
    (
        'atomic',
        'cache',
        'compat',
        'conditions',
        'origins',
        'seeding',
        'vocabulary',
        'encodings',
        'geo',
        'controls',
        'boxes',
        'degradation',
    ),
    # 1. the corpus on disk and its datasets; the networks
    ('corpus', 'datasets', 'models'),
    # 2. training datamodules; metrics
    ('datamodules', 'metrics'),
    # 3-4. the tasks that train generators; synthesis over every family
    ('lightning_modules', 'synthesis', 'families'),
    # 5-6. R-Filter, the bank and what fills or reads it, downstream augmentation
    (
        'rfilter',
        'bank',
        'transforms',
        'lightning_modules.synthesizer',
        'datamodules.mask_prompt',
        'datamodules.box_layouts',
        'datamodules.detection',
        'datamodules.downstream',
        'datamodules.change',
        'datamodules.eurosat_mini',
    ),
    # 7. evaluation, the benchmark and the demo
    ('evaluation', 'demo'),
)
CLI = ('cli', 'lightning_cli', 'corpus.cli', 'evaluation.cli')


def module_files() -> dict[str, Path]:
    """Every module's import name -> its file."""
    modules = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob('*.py'):
            parts = path.relative_to(ROOT / folder).with_suffix('').parts
            if parts[-1] == '__init__':
                parts = parts[:-1]
            modules['.'.join((package, *parts))] = path
    return modules


def imported_names(module: str, path: Path) -> Iterator[str]:
    """The dotted names ``module`` imports (``from a import b`` gives ``a.b``)."""
    package = module if path.name == '__init__.py' else module.rpartition('.')[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parent = package.split('.')[: len(package.split('.')) - node.level + 1]
                base = '.'.join([*parent, *([node.module] if node.module else [])])
            yield from (f'{base}.{alias.name}' for alias in node.names)


def import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules it imports (each name resolved to its module)."""
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name in imported_names(module, path):
            while name and name not in modules:
                name = name.rpartition('.')[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def circles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def stage_of(module: str) -> int | None:
    """The index in :data:`STAGES` of a module's stage (None: a CLI, the root)."""
    parts = module.split('.')[1:]
    for end in range(len(parts), 0, -1):
        name = '.'.join(parts[:end])
        if name in CLI:
            return None
        for index, stage in enumerate(STAGES):
            if name in stage:
                return index
    return None


@pytest.fixture(scope='module')
def graph() -> dict[str, set[str]]:
    return import_graph(module_files())


def test_no_import_circles(graph: dict[str, set[str]]) -> None:
    assert circles(graph) == []


def test_no_stage_imports_a_later_one(graph: dict[str, set[str]]) -> None:
    backwards = []
    for module, targets in sorted(graph.items()):
        stage = stage_of(module)
        for target in sorted(targets):
            if target.startswith(f'{module}.'):  # a package gathering its own modules
                continue
            target_stage = stage_of(target)
            if stage is not None and target_stage is not None and target_stage > stage:
                backwards.append(f'{module} -> {target}')
    assert backwards == []


def test_every_top_level_name_has_a_stage() -> None:
    unstaged = [m for m in module_files() if m.count('.') and stage_of(m) is None]
    assert sorted(m.split('.', 1)[1] for m in unstaged) == sorted(CLI)


def test_circle_finder_sees_a_circle(tmp_path: Path) -> None:
    graph = {'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}
    assert circles(graph) == [['a', 'b', 'c']]
    first = tmp_path / 'first.py'
    first.write_text('def late():\n    from .second import thing\n')
    assert list(imported_names('pkg.first', first)) == ['pkg.second.thing']


def test_layout_limits() -> None:
    modules = module_files()
    flat = [
        m for m in modules if m.count('.') == 1 and modules[m].parent.name == 'torchgeo_earthsynth'
    ]
    assert len(flat) <= 15, sorted(flat)
    longest = max(modules.values(), key=lambda path: len(path.read_text().splitlines()))
    assert len(longest.read_text().splitlines()) <= 500, longest
