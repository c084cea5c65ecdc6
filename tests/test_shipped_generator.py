# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Tests for the shipped generator: its hashes, its loading and the fidelity the docs quote."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from torchgeo_earthsynth.datasets import EarthSynthMini
from torchgeo_earthsynth.metrics import generator_fidelity
from torchgeo_earthsynth.models import (
    SHIPPED_GENERATOR,
    install_generator,
    shipped_fidelity,
    shipped_generator,
)
from torchgeo_earthsynth.synthesis import Synthesizer


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(SHIPPED_GENERATOR, tmp_path / 'generator'))


def test_shipped_generator_is_small_safetensors_with_its_hashes() -> None:
    files = [p for p in SHIPPED_GENERATOR.rglob('*') if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 25e6
    assert not [p for p in files if p.suffix in ('.bin', '.ckpt', '.pt', '.pth')]
    assert shipped_generator() == SHIPPED_GENERATOR


def test_a_changed_or_missing_file_is_refused(copy: Path) -> None:
    weights = copy / 'controlnet' / 'diffusion_pytorch_model.safetensors'
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r'SHA256SUMS:\d+: .*controlnet.* does not match'):
        shipped_generator(copy)
    weights.unlink()
    with pytest.raises(ValueError, match='is missing'):
        shipped_generator(copy)
    (copy / 'SHA256SUMS').unlink()
    with pytest.raises(FileNotFoundError, match='SHA256SUMS is missing'):
        shipped_generator(copy)


def test_a_checksum_line_may_not_leave_the_folder(copy: Path) -> None:
    sums = copy / 'SHA256SUMS'
    sums.write_text(sums.read_text() + f'{"0" * 64}  ../outside.json\n')
    with pytest.raises(ValueError, match=r'SHA256SUMS:\d+: \.\./outside\.json lies outside'):
        shipped_generator(copy)
    sums.write_text('not-a-line\n')
    with pytest.raises(ValueError, match=r'SHA256SUMS:1: expected'):
        shipped_generator(copy)


def test_install_writes_hashes_that_check(copy: Path, tmp_path: Path) -> None:
    installed = install_generator(copy, {'mIoU': {'trained': 0.5}}, tmp_path / 'installed')
    assert shipped_generator(installed) == installed
    assert shipped_fidelity(installed) == {'mIoU': {'trained': 0.5}}


def test_shipped_generator_reaches_the_quoted_fidelity() -> None:
    """The benchmark's measurement, repeated: the same held-out masks, seeds and steps."""
    quoted = shipped_fidelity()
    size = 32
    train = EarthSynthMini(size=size, long_tail=True)
    val = EarthSynthMini(size=size, split='val', long_tail=True)
    generator = Synthesizer.from_pretrained(
        shipped_generator(),
        num_inference_steps=quoted['sampling']['steps'],
        guidance_scale=quoted['sampling']['guidance'],
    )
    torch.manual_seed(0)
    result = generator_fidelity(
        {'trained': generator},
        [train[i] for i in range(128)],
        [val[i] for i in range(quoted['held_out_masks'])],
    )
    assert result.scores['trained'].miou >= quoted['mIoU']['trained'] - 0.02
