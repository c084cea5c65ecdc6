# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The ``earthsynth`` command as a newcomer meets it: overrides, missing and empty banks."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch import LightningDataModule

from torchgeo_earthsynth.evaluation.config import (
    _config_parser,
    _from_namespace,
    _instantiate,
    _Plan,
)
from torchgeo_earthsynth.evaluation.harness import run_experiment

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


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from torchgeo_earthsynth.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out + captured.err


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    from torchgeo_earthsynth.cli import COMMANDS, EXTRA_COMMANDS

    code, text = _run_cli(['--help'], capsys)
    assert code == 0
    for command in (*COMMANDS, *EXTRA_COMMANDS, 'fit', 'demo', 'evaluate', 'synthesize'):
        assert f'\n  {command} ' in text, command


def test_mistyped_subcommand_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    from torchgeo_earthsynth.cli import COMMANDS

    code, text = _run_cli(['synthesise'], capsys)
    assert code == 2
    assert "unknown command 'synthesise' (did you mean 'synthesize'?)" in text
    for command in COMMANDS:
        assert f'\n  {command} ' in text, command


@pytest.mark.parametrize(
    'command', ['demo', 'evaluate', 'build-corpus', 'datasets', 'synthesize', 'benchmark']
)
def test_subcommand_help_has_no_sphinx_markup(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = _run_cli([command, '--help'], capsys)
    assert code == 0
    assert text.startswith(f'usage: earthsynth {command}')
    for markup in ('``', ':class:', ':func:', ':data:', ':attr:', ':meth:'):
        assert markup not in text, markup


def test_plain() -> None:
    from torchgeo_earthsynth.cli import plain

    text = 'a :class:`~torchgeo_earthsynth.bank.SyntheticBank` or :data:`DEFAULT_DATA` (``x``)'
    assert plain(text) == 'a SyntheticBank or DEFAULT_DATA (x)'
    assert plain(':func:`label map <torchgeo_earthsynth.encodings.label_map>`') == 'label map'


def test_every_demo_option_has_help_and_default(capsys: pytest.CaptureFixture[str]) -> None:
    import re

    _, text = _run_cli(['demo', '--help'], capsys)
    options = re.findall(r'^  (--[a-z-]+)', text, flags=re.M)
    assert len(options) >= 10
    blocks = re.split(r'\n  (?=--)', text.split('options:', 1)[1])[1:]
    for block in blocks:
        assert '(default:' in ' '.join(block.split()), block


def test_datasets_command(capsys: pytest.CaptureFixture[str]) -> None:
    from torchgeo_earthsynth.cli import main

    main(['datasets', 'LoveDA'])
    text = capsys.readouterr().out
    assert '    0  no-data                  -> background (no-data)' in text
    assert '    7  agriculture              -> agriculture land' in text
    code, text = _run_cli(['datasets', 'SpaceNet'], capsys)
    assert code == 2 and "no encoding for dataset 'SpaceNet'" in text


def test_synthesize_help_offers_no_optimizer(capsys: pytest.CaptureFixture[str]) -> None:
    code, text = _run_cli(['synthesize', '--help'], capsys)
    assert code == 0
    assert '--optimizer' not in text and '--lr_scheduler' not in text
    assert '--allow-untrained' in text
    assert 'Args:' not in text and 'Returns:' not in text


def test_synthesize_refuses_an_untrained_model(
    tmp_path: Path, mini_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ['synthesize', '--config', str(CONFIGS / 'synthesize_mini.yaml')]
    argv += ['--data.root', str(mini_root), '--bank.root', str(tmp_path / 'bank')]
    argv += ['--model.init_args.image_size', '32', '--trainer.enable_progress_bar', 'false']
    code, text = _run_cli(argv, capsys)
    assert code == 2
    assert 'the model has no trained weights' in text and '--allow-untrained' in text
    assert not list(tmp_path.rglob('*.png'))  # nothing was written
