# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The ``earthsynth`` command as a newcomer meets it: overrides, missing and empty banks."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch import LightningDataModule

from torchgeo_earthsynth.evaluation import (
    _config_parser,
    _from_namespace,
    _instantiate,
    _Plan,
    run_experiment,
)

CONFIGS = Path(__file__).parents[1] / 'configs'


@pytest.mark.parametrize('flag', ['--data.init_args.root', '--data.root'])
def test_evaluate_root_override_changes_the_data(flag: str, mini_root: Path) -> None:
    argv = ['--config', str(CONFIGS / 'evaluate_mini.yaml'), flag, str(mini_root)]
    plan = _Plan(_from_namespace(_config_parser().parse_args(argv)))
    assert plan.data['init_args']['root'] == str(mini_root)
    dm = _instantiate(plan.data, LightningDataModule, 'data')
    dm.setup('fit')
    # the mini corpus of the fixture has 24 training scenes; the config's default 256
    assert dm.root == str(mini_root)
    assert len(dm.train_dataset) == 24


def test_evaluate_override_typo_is_an_error(mini_root: Path) -> None:
    argv = ['--config', str(CONFIGS / 'evaluate_mini.yaml'), '--data.init_args.rooot', 'x']
    with pytest.raises(ValueError, match=r"(?s)bad data: .*'rooot' is not accepted"):
        _Plan(_from_namespace(_config_parser().parse_args(argv)))


@pytest.fixture
def base(tmp_path: Path, mini_root: Path) -> dict[str, object]:
    return {
        'output': str(tmp_path / 'out'),
        'progress': False,
        'data': {'root': str(mini_root), 'batch_size': 4},
        'synthetic': {'p': 0.5},
        'arms': ['real', 'real+synthetic'],
    }


def test_evaluate_missing_bank_says_it_does_not_exist(
    base: dict[str, object], tmp_path: Path
) -> None:
    missing = tmp_path / 'no-bank'
    with pytest.raises(ValueError, match=r'bank .*no-bank does not exist'):
        run_experiment({**base, 'bank': str(missing)})
    assert not missing.exists()  # nothing was created in its place
    assert not (tmp_path / 'out').exists()


def test_evaluate_empty_bank_fails_before_training(base: dict[str, object], tmp_path: Path) -> None:
    empty = tmp_path / 'bank'
    (empty / 'train' / 'images').mkdir(parents=True)
    (empty / 'train' / 'masks').mkdir()
    with pytest.raises(ValueError, match=r'bank .*bank is empty'):
        run_experiment({**base, 'bank': str(empty)})
    assert not (tmp_path / 'out').exists()  # no arm was trained


def test_offline_hub_id_says_it_cannot_reach_the_hub() -> None:
    from torchgeo_earthsynth.synthesis import Synthesizer

    with pytest.raises(
        ValueError, match=r'^earthsynth-tests/not-cached: cannot reach the Hub and not in the local'
    ):
        Synthesizer.from_pretrained('earthsynth-tests/not-cached')
