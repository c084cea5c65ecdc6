# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The tutorials' code blocks, run as written (tiny models and data, seconds each).

The TorchGeo augmentation tutorial runs in ``test_readme_snippets.py`` and the place-and-date
tutorial in ``test_readme_diffusionsat.py``; this file runs the corpus, super-resolution and
in-painting tutorials' python blocks (and the README's cloud-fill quick start) and parses every
``earthsynth <command> --config ...`` line of the docs and the README (``--print_config``).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import torch
from test_text2earth import SIZE, save_their_layout

from torchgeo_earthsynth.cli import main as cli_main
from torchgeo_earthsynth.lightning_modules import SuperResolutionTask
from torchgeo_earthsynth.synthesis import Synthesizer
from torchgeo_earthsynth.vocabulary import CLASS_IDS

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / 'docs' / 'tutorials'


def blocks(path: Path, language: str) -> list[str]:
    """The fenced code blocks in ``language`` of a Markdown file, in order."""
    return re.findall(rf'```{language}\n(.*?)```', path.read_text(), flags=re.DOTALL)


def run(path: Path, block: str) -> dict[str, Any]:
    """Run one python block in a fresh namespace; the namespace."""
    namespace: dict[str, Any] = {}
    exec(compile(block, str(path), 'exec'), namespace)
    return namespace


def config_commands(path: Path) -> list[list[str]]:
    """The ``uv run earthsynth <command> --config ...`` lines of a Markdown file's code blocks."""
    text = '\n'.join(blocks(path, 'bash')).replace('\\\n', ' ')
    text += '\n' + '\n'.join(re.findall(r'`(uv run earthsynth [^`]*)`', path.read_text()))
    lines = [shlex.split(line, comments=True) for line in text.splitlines()]
    return [
        line for line in lines if line[:3] == ['uv', 'run', 'earthsynth'] and '--config' in line
    ]


def test_temporal_tutorial_trains_change_detection_on_synthetic_pairs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv('EARTHSYNTH_CACHE', str(tmp_path))
    monkeypatch.chdir(tmp_path)
    page = TUTORIALS / 'temporal.md'
    pairs, bank = blocks(page, 'python')  # the bank continues the pairs' example
    namespace = run(page, pairs + bank)
    change = namespace['change']
    assert change.shape == (8, 32, 32) and change.any(dim=(1, 2)).all()
    assert namespace['trainer'].global_step == 2
    levircd = namespace['levircd']
    assert len(levircd) == 8 and levircd[0]['image'].shape == (2, 3, 32, 32)
    assert {int(levircd[i]['mask'].sum() > 0) for i in range(8)} == {1}  # every pair changed


def test_corpus_tutorial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    page = TUTORIALS / 'corpus.md'
    (block,) = blocks(page, 'python')
    namespace = run(page, block)
    assert namespace['report'].written == 4
    sample = namespace['sample']
    assert sample['image'].shape == (3, 64, 64) and sample['mask'].shape == (64, 64)
    assert sample['prompt'].startswith('A satellite image of ')
    assert len(namespace['corpus']) == 4


def test_superres_tutorial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # what `earthsynth fit --config configs/superres_tiny.yaml` exports, untrained
    export = tmp_path / 'outputs/superres_tiny/lightning_logs/version_0/export'
    SuperResolutionTask(image_size=32, seed=0, val_num_samples=0).save_pretrained(export)
    load = Synthesizer.from_pretrained

    def load_fast(*args: Any, **kwargs: Any) -> Synthesizer:  # tiny models: 2 sampler steps
        return load(*args, **{'num_inference_steps': 2, **kwargs})

    monkeypatch.setattr(Synthesizer, 'from_pretrained', load_fast)
    page = TUTORIALS / 'superres.md'
    (block,) = blocks(page, 'python')
    image = run(page, block)['image']
    assert image.shape == (1, 3, 32, 32) and torch.isfinite(image).all()


PAGES = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*/*.md'))]


@pytest.mark.parametrize('page', PAGES, ids=lambda page: page.name)
def test_config_commands_parse(
    page: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ``earthsynth <command> --config`` line of the README and the docs parses."""
    monkeypatch.chdir(ROOT)
    for command in config_commands(page):
        with pytest.raises(SystemExit) as exit_info:
            cli_main([*command[3:], '--print_config'])
        assert exit_info.value.code == 0, command
        printed = capsys.readouterr().out
        if command[3] == 'fit':
            config = Path(command[command.index('--config') + 1]).stem
            assert f'default_root_dir: outputs/{config}' in printed, command


def test_commands_found() -> None:
    assert len(config_commands(TUTORIALS / 'lightningcli.md')) == 2  # + one torchgeo line
    assert {c[3] for page in PAGES for c in config_commands(page)} == {
        'benchmark',
        'evaluate',
        'fit',
        'synthesize',
    }


PLACEHOLDER = re.compile(r'^(\w+) = \.\.\.')


def run_with(path: Path, block: str, namespace: dict[str, Any], given: dict[str, Any]) -> None:
    """Run a python block in ``namespace``, a ``name = ...`` line taking ``given[name]``."""
    lines = []
    for line in block.splitlines():
        match = PLACEHOLDER.match(line)
        if match:
            namespace[match[1]] = given[match[1]]
        else:
            lines.append(line)
    exec(compile('\n'.join(lines), str(path), 'exec'), namespace)


def test_inpainting_tutorial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    save_their_layout(tmp_path / 'lcybuaa' / 'Text2Earth-inpainting', inpainting=True)
    load = Synthesizer.from_pretrained

    def load_tiny(source: str, **kwargs: Any) -> Synthesizer:
        if source == 'jaychempan/EarthSynth':  # the released ControlNet: a tiny untrained one
            return Synthesizer.tiny(image_size=SIZE, num_inference_steps=2)
        return load(source, **{'num_inference_steps': 2, **kwargs})

    monkeypatch.setattr(Synthesizer, 'from_pretrained', load_tiny)
    scene = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 255
    cloud = torch.zeros(1, SIZE, SIZE, dtype=torch.bool)
    cloud[:, 4:20, 6:22] = True
    mask = torch.zeros(1, SIZE, SIZE, dtype=torch.long)
    mask[:, 8:24, 8:24] = CLASS_IDS['building']
    given = {'scene': scene, 'cloud_mask': cloud, 'mask': mask}
    page = TUTORIALS / 'inpainting.md'
    namespace: dict[str, Any] = {}
    page_blocks = blocks(page, 'python')
    assert len(page_blocks) == 2
    for block in page_blocks:
        run_with(page, block, namespace, given)
    kept = ~cloud[:, None].expand_as(scene)
    assert torch.equal(namespace['filled'][kept], scene[kept])
    assert namespace['wider'].shape == (1, 3, SIZE + 128, SIZE + 128)
    assert torch.equal(namespace['wider'][..., 64:-64, 64:-64], scene)
    region = namespace['region']
    outside = ~region[:, None].expand_as(scene)
    assert torch.equal(namespace['edited'][outside], scene[outside])
    # the README's cloud-fill quick start, in the same layout
    (readme,) = [b for b in blocks(ROOT / 'README.md', 'python') if 'Text2Earth-inpainting' in b]
    readme_namespace: dict[str, Any] = {}
    run_with(ROOT / 'README.md', readme, readme_namespace, given)
    assert torch.equal(readme_namespace['filled'][kept], scene[kept])


def test_readme_python_blocks_are_run_somewhere() -> None:
    """Each README python block is a tutorial block that runs in a test, or says why not."""
    tested = blocks(TUTORIALS / 'augment.md', 'python') + blocks(
        TUTORIALS / 'place_and_date.md', 'python'
    )
    for block in blocks(ROOT / 'README.md', 'python'):
        if 'Text2Earth-inpainting' in block:  # run by test_inpainting_tutorial
            continue
        if "'jaychempan/EarthSynth'" in block:  # the released weights: needs the hub and a GPU
            continue
        assert block in tested, block
