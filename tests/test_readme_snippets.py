# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The TorchGeo tutorial's python blocks, run as written (on fake data in TorchGeo's layouts).

The blocks of ``docs/tutorials/augment.md`` without a ``...`` placeholder run here, each on its
own; the README's quick start is one of them, word for word.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from torchgeo_earthsynth.bank import SyntheticBank
from torchgeo_earthsynth.compat import TORCHGEO_VERSION_TUPLE
from torchgeo_earthsynth.vocabulary import CLASS_IDS, prompt_from_mask

DATA = Path(__file__).parent / 'data'
ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / 'docs' / 'tutorials' / 'augment.md'
README = ROOT / 'README.md'
SIZE = 32


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding ``data/<dataset>`` (the fakes) and a filled ``outputs/bank``."""
    for name in ('loveda', 'ucmerced', 'vhr10'):
        shutil.copytree(DATA / name, tmp_path / 'data' / name, ignore=_scripts)
    samples = []
    for k, name in enumerate(('water', 'building', 'agriculture land', 'forest land', 'plane')):
        mask = torch.zeros(SIZE, SIZE, dtype=torch.long)
        mask[: SIZE // 2 + k] = CLASS_IDS[name]
        image = torch.randint(0, 256, (3, SIZE, SIZE), generator=torch.Generator().manual_seed(k))
        samples.append({'image': image.float(), 'mask': mask, 'prompt': prompt_from_mask(mask)})
    SyntheticBank(tmp_path / 'outputs' / 'bank').add(samples)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _scripts(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if n == 'data.py']


def python_blocks(path: Path) -> list[str]:
    """The fenced python blocks of a Markdown file, in order."""
    return re.findall(r'```python\n(.*?)```', path.read_text(), flags=re.DOTALL)


def runnable_blocks() -> list[str]:
    """The tutorial's python blocks that hold no ``...`` placeholder."""
    return [block for block in python_blocks(PAGE) if '...' not in block]


def run_block(index: int) -> dict[str, Any]:
    """Run the tutorial's ``index``-th runnable block on its own; its namespace."""
    namespace: dict[str, Any] = {}
    exec(compile(runnable_blocks()[index], str(PAGE), 'exec'), namespace)
    return namespace


def test_tutorial_blocks() -> None:
    assert len(runnable_blocks()) == 4
    readme = [block for block in python_blocks(README) if 'SyntheticAugmentation' in block]
    assert readme, 'the README quick start of augmentation is gone'
    assert all(block in runnable_blocks() for block in readme)


def test_loveda_segmentation_quick_start(workdir: Path) -> None:
    synthetic = run_block(0)['synthetic']
    assert synthetic.stats['from_bank'] > 0, synthetic.stats
    assert synthetic.stats['replaced'] == synthetic.stats['from_bank']


def test_ucmerced_classification_quick_start(workdir: Path) -> None:
    synthetic = run_block(1)['synthetic']
    assert synthetic.stats['from_bank'] > 0  # buildings, forest, plane rows had bank images


def test_vhr10_detection_quick_start(
    workdir: Path, vhr10_checksums: Callable[[Path], None]
) -> None:
    if TORCHGEO_VERSION_TUPLE < (0, 10):
        pytest.importorskip('pycocotools')  # TorchGeo 0.8 reads the annotations with it
    vhr10_checksums(workdir / 'data' / 'vhr10')  # fake files: TorchGeo 0.10 checks SHA-256
    namespace = run_block(2)
    synthetic, dm = namespace['synthetic'], namespace['dm']
    dm.setup('fit')
    batch = next(iter(dm.train_dataloader()))
    out, plan = synthetic.augment(batch)
    assert synthetic.encoding is not None and synthetic.encoding.name == 'VHR10'
    assert out['label'] is batch['label']
    assert len(plan.origin) == len(batch['label']) == 4  # one batch of the 6 training images
    assert plan.synthetic.any()  # p=0.5 over 4 rows with seed 0


def test_vhr10_detection_from_a_bank_quick_start(
    workdir: Path, vhr10_checksums: Callable[[Path], None]
) -> None:
    if TORCHGEO_VERSION_TUPLE < (0, 10):
        pytest.importorskip('pycocotools')
    vhr10_checksums(workdir / 'data' / 'vhr10')
    boxes = torch.tensor([[2.0, 2.0, 14.0, 14.0], [14.0, 2.0, 26.0, 14.0]])
    ids = torch.tensor([CLASS_IDS['plane'], CLASS_IDS['ship']])
    mask = torch.zeros(SIZE, SIZE, dtype=torch.long)
    mask[2:14, 2:14], mask[2:14, 14:26] = ids[0], ids[1]
    image = torch.randint(0, 256, (3, SIZE, SIZE), generator=torch.Generator().manual_seed(0))
    sample = {'image': image.float(), 'mask': mask, 'bbox_xyxy': boxes, 'label': ids}
    SyntheticBank('outputs/detection_bank').add([sample])
    synthetic = run_block(3)['synthetic']
    assert synthetic.stats['from_bank'] > 0
