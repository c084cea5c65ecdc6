# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Each script in benchmarks/ runs at a tiny size and writes its JSON with when and where."""

import importlib.util
import json
import logging
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from torchgeo_earthsynth.models.shipped import SHIPPED_GENERATOR

BENCHMARKS = Path(__file__).resolve().parents[1] / 'benchmarks'


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A loader of ``benchmarks/<name>.py`` as a module (its siblings importable, as when run)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(
            f'benchmark_{name}', BENCHMARKS / f'{name}.py'
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        loaded.append(spec.name)
        spec.loader.exec_module(module)
        return module

    loaded: list[str] = []
    yield load
    for name in [*loaded, 'provenance']:
        sys.modules.pop(name, None)


def written(folder: Path, name: str) -> dict[str, Any]:
    """The JSON a script wrote, checked for its when and where."""
    record: dict[str, Any] = json.loads((folder / f'{name}.json').read_text())
    assert record['benchmark'] == name
    assert record['when'].endswith('+00:00')  # UTC
    assert record['where']['cpus'] >= 1 and record['where']['torch']
    assert record['where']['platform']
    return record


def test_provenance_writes_when_and_where(tmp_path: Path, script: Any) -> None:
    provenance = script('provenance')
    path = provenance.write_result('x', {'rate': 1.5}, tmp_path, ['--n', '2'])
    record = written(tmp_path, 'x')
    assert path == tmp_path / 'x.json'
    assert record['results'] == {'rate': 1.5}
    assert record['command'] == 'python benchmarks/x.py --n 2'


def test_dataset_throughput(tmp_path: Path, script: Any) -> None:
    argv = ['--sizes', '16', '--tiles', '2', '--repeats', '1', '--min-time', '0']
    summary = script('dataset_throughput').main([*argv, '--results', str(tmp_path)])
    record = written(tmp_path, 'dataset_throughput')
    assert record['results'] == summary
    assert summary['samples_per_s'][0]['size'] == 16 and summary['ratio'] > 0


def test_rfilter(tmp_path: Path, script: Any) -> None:
    argv = ['--size', '16', '--batch-size', '2', '--batches', '1', '--repeats', '1']
    summary = script('rfilter').main([*argv, '--min-time', '0', '--results', str(tmp_path)])
    assert written(tmp_path, 'rfilter')['results'] == summary
    assert 0 <= summary['kept'] <= 2 and summary['ratio'] > 0


def test_synthesis(tmp_path: Path, script: Any) -> None:
    argv = ['--num-images', '2', '--batch-size', '2', '--image-size', '16', '--steps', '1']
    summary = script('synthesis').main([*argv, '--repeats', '1', '--results', str(tmp_path)])
    assert written(tmp_path, 'synthesis')['results'] == summary
    assert set(summary['images_per_s']) == {'naive loop', 'Synthesizer'}


def test_vae_fidelity(tmp_path: Path, script: Any) -> None:
    argv = ['--steps', '1', '--size', '32', '--num', '2', '--results', str(tmp_path)]
    summary = script('vae_fidelity').main(argv)
    assert written(tmp_path, 'vae_fidelity')['results'] == summary
    assert summary['steps'] == 1 and 0 <= summary['reconstruction_miou'] <= 1


def test_demo_ablation(tmp_path: Path, script: Any) -> None:
    argv = ['--budgets', '4', '--seeds', '0', '--downstream-steps', '1', '--num-bank', '4']
    argv += ['--num-train', '32', '--num-val', '16', '--output', str(tmp_path)]
    ablation = script('demo_ablation')
    result = ablation.main([*argv, '--results', str(tmp_path)])
    rows = written(tmp_path, 'demo_ablation')['results']['rows']
    key = ('setting', 'kept', 'arm', 'miou')  # one seed: the intervals are NaN
    assert [[r[k] for k in key] for r in rows] == [[r[k] for k in key] for r in result['rows']]
    assert {row['setting'] for row in result['rows']} == {name for name, _, _ in ablation.SETTINGS}
    assert len(result['rows']) == 2 * len(ablation.SETTINGS)  # real, real+synthetic each
    for row in result['rows']:
        assert (row['diff'] is None) == (row['arm'] == 'real')
        assert 0.0 <= row['miou'] <= 1.0
    assert all(r['kept'] == '4/4' for r in result['rows'] if 'no R-Filter' in r['setting'])
    assert 'CF-Comp + R-Filter' in (tmp_path / 'ablation.md').read_text()


def test_mask_following(tmp_path: Path, script: Any) -> None:
    # the folder itself: checking its hashes is tests/test_shipped_generator.py's job
    argv = [str(SHIPPED_GENERATOR), '--num', '2', '--steps', '1', '--results', str(tmp_path)]
    summary = script('mask_following').main(argv)
    assert written(tmp_path, 'mask_following')['results'] == summary
    assert set(summary['mIoU']) == {'real', 'untrained', 'shuffled', 'trained'}


def test_temporal_prediction(tmp_path: Path, script: Any) -> None:
    argv = ['--steps', '1', '--vae-steps', '1', '--num-train', '8', '--num-eval', '2']
    argv += ['--batch-size', '4', '--sample-steps', '1', '--root', str(tmp_path)]
    summary = script('temporal_prediction').main([*argv, '--results', str(tmp_path)])
    assert written(tmp_path, 'temporal_prediction')['results'] == summary
    assert set(summary['psnr_y']) == {
        'copy the last frame',
        'untrained',
        'trained',
        'VAE reconstruction (ceiling)',
    }
    assert summary['sequences'] == 2


def test_shipped_generator(tmp_path: Path, script: Any) -> None:
    argv = [str(SHIPPED_GENERATOR), '--num', '2', '--steps', '1', '--results', str(tmp_path)]
    summary = script('shipped_generator').main(argv)
    assert written(tmp_path, 'shipped_generator')['results'] == summary
    assert summary['held_out_masks'] == 2 and 'trained' in summary['mIoU']


@pytest.mark.parametrize('what', ['train', 'synthesis', 'rfilter'])
def test_profiles(tmp_path: Path, script: Any, what: str) -> None:
    argv = [what, '--size', '32', '--repeats', '1', '--results', str(tmp_path)]
    result = script('profiles').main(argv)
    record = written(tmp_path, f'profiles_{what}')
    assert record['results'] == result and result['size'] == 32
    assert record['command'].startswith(f'python benchmarks/profiles.py {what}')


def test_train_step(tmp_path: Path, script: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    module = script('train_step')

    def run_in_process(command: list[str], **_: Any) -> SimpleNamespace:
        # each variant runs in its own process for a clean peak RSS; here one process saves
        # a Python start with torch and Lightning per variant (a minute in all)
        assert command[:2] == [sys.executable, module.__file__]
        return SimpleNamespace(stdout=json.dumps(module.main(command[2:])))

    monkeypatch.setattr(module, 'subprocess', SimpleNamespace(run=run_in_process))
    argv = ['--steps', '1', '--batch-size', '2', '--size', '32', '--rounds', '1']
    summary = module.main([*argv, '--num-train', '4', '--results', str(tmp_path)])
    assert written(tmp_path, 'train_step')['results'] == summary
    assert summary['ratio'] > 0 and summary['peak_rss_mb']


@pytest.mark.parametrize('task', ['segmentation', 'detection'])
def test_augmentation(tmp_path: Path, script: Any, task: str) -> None:
    argv = ['--task', task, '--steps', '1', '--rounds', '1', '--batch-size', '2', '--size', '32']
    summary = script('augmentation').main([*argv, '--results', str(tmp_path)])
    assert written(tmp_path, f'augmentation_{task}')['results'] == summary
    assert summary['task'] == task and summary['ratio'] > 0


#: brief_fit.py's options at their smallest: two steps on four scenes, one sampling step.
BRIEF_FIT = ['--steps', '1', '--vae-steps', '1', '--num-train', '4', '--num-eval', '2']
BRIEF_FIT += ['--batch-size', '2', '--sample-steps', '1']


def test_metadata_following(tmp_path: Path, script: Any) -> None:
    # eight scenes a split, so that both seasons are in each (a later option wins)
    argv = [*BRIEF_FIT, '--num-train', '8', '--num-eval', '8', '--seeds', '1']
    argv += ['--root', str(tmp_path / 'corpus')]
    summary = script('metadata_following').main([*argv, '--results', str(tmp_path)])
    assert written(tmp_path, 'metadata_following')['results'] == summary
    assert set(summary['green_chroma_shift']) == {'real', 'through_vae', 'untrained', 'trained'}


def test_multicontrol_following(tmp_path: Path, script: Any) -> None:
    argv = [*BRIEF_FIT, '--root', str(tmp_path / 'corpus'), '--results', str(tmp_path)]
    summary = script('multicontrol_following').main(argv)
    assert written(tmp_path, 'multicontrol_following')['results'] == summary
    assert set(summary['rows']) == {'untrained', 'shuffled', 'trained'}


def test_synthesis_quality(tmp_path: Path, script: Any) -> None:
    argv = [str(SHIPPED_GENERATOR), '--num', '2', '--batch-size', '2', '--image-size', '32']
    argv += ['--steps', '4', '--fast-steps', '2', '--rounds', '1', '--results', str(tmp_path)]
    summary = script('synthesis_quality').main(argv)
    assert written(tmp_path, 'synthesis_quality_demo')['results'] == summary
    assert 'anchor: diffusers pipeline' in summary['rows'] and summary['ratio'] > 0


def test_fault_fuzz(tmp_path: Path, script: Any) -> None:
    # the kill -9 half runs `earthsynth synthesize` processes: a minute and more, so the
    # reader half only (tests/test_bank.py kills a bank writer with SIGKILL on its own)
    argv = ['--variants', '1', '--skip-kills', '--out', str(tmp_path / 'out')]
    package = logging.getLogger('torchgeo_earthsynth')
    level = package.level
    summary = script('fault_fuzz').main([*argv, '--results', str(tmp_path)])
    assert package.level == level  # it silenced the later tests' log captures once
    assert written(tmp_path, 'fault_fuzz')['results'] == summary
    assert summary['mutations tried'] > 0 and summary['kills'] == 0
    assert (tmp_path / 'out' / 'reader.csv').exists()


def test_report(tmp_path: Path, script: Any) -> None:
    results = tmp_path / 'results'
    script('provenance').write_result('x', {'ratio': 1.23456, 'rate': {'a': 2.0}}, results)
    old = {'benchmark': 'old', 'when': '2026-01-01T00:00:00+00:00', 'mIoU': {'trained': 0.5}}
    (results / 'old.json').write_text(json.dumps(old))  # flat, as before provenance.py
    output = tmp_path / 'docs' / 'benchmarks.md'
    text = script('report').main(['--results', str(results), '--output', str(output)])
    assert output.read_text() == text
    rows = [line for line in text.splitlines() if line.startswith('| ') and '---' not in line]
    assert len(rows) == 3  # header, old, x
    assert rows[1].startswith('| old | - | mIoU: trained 0.5 | 2026-01-01T00:00:00+00:00 |')
    cells = rows[2].split(' | ')
    assert cells[:3] == ['| x', '1.23', 'rate: a 2']  # 3 significant digits
    assert cells[3].endswith('+00:00') and 'cpus' in cells[4] and 'torch' in cells[4]


#: Modules of benchmarks/ that are no benchmark: helpers the scripts import (covered through them).
HELPERS = {'provenance', 'brief_fit', 'detection_data'}


def test_every_script_has_a_smoke_test() -> None:
    scripts = {p.stem for p in BENCHMARKS.glob('*.py')} - HELPERS
    tested = {name.removeprefix('test_') for name in globals() if name.startswith('test_')}
    assert scripts <= tested, f'no smoke test for {sorted(scripts - tested)}'


def test_change_pairs(tmp_path: Path, script: Any) -> None:
    argv = ['--steps', '2', '--num-train', '8', '--num-eval', '2', '--sample-steps', '1']
    summary = script('change_pairs').main(
        [*argv, '--root', str(tmp_path), '--results', str(tmp_path)]
    )
    assert written(tmp_path, 'change_pairs')['results'] == summary
    assert set(summary['rows']) == {
        'real pairs',
        'synthetic pairs (shipped generator)',
        'synthetic pairs (untrained twin)',
    }
    assert all(len(values) == 2 for values in summary['samples'].values())
    assert all(0.0 <= v <= 1.0 for values in summary['samples'].values() for v in values)
    assert summary['synthetic_changed_share'] > 0  # every synthetic pair gained a building


def test_spectral_fidelity(tmp_path: Path, script: Any) -> None:
    argv = ['--steps', '1', '--vae-steps', '1', '--num-train', '8', '--num-eval', '2']
    argv += ['--sample-steps', '1', '--batch-size', '4', '--root', str(tmp_path)]
    summary = script('spectral_fidelity').main([*argv, '--results', str(tmp_path)])
    assert written(tmp_path, 'spectral_fidelity')['results'] == summary
    real = summary['rows']['real held-out images']
    assert real['mean_angle_deg'] == 0 and real['mean_band_mae'] == 0  # real against itself
    assert len(summary['bands']) == 13
    for row in summary['rows'].values():
        assert 0 <= row['mask_miou'] <= 1 and row['per_class']
