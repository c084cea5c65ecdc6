# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The offline CLIP: trained on image-caption pairs, it scores matching captions higher."""

from __future__ import annotations

import pytest
import torch

from torchgeo_earthsynth.metrics import train_clip


def _scenes(count: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """Scenes whose caption names the colour of their left and right halves."""
    generator = torch.Generator().manual_seed(seed)
    colours = {'red': (220, 40, 40), 'green': (40, 200, 60), 'blue': (40, 60, 220)}
    names = list(colours)
    images, captions = [], []
    for i in range(count):
        left, right = names[i % 3], names[(i // 3) % 3]
        image = torch.empty(3, 32, 32)
        image[:, :, :16] = torch.tensor(colours[left]).view(3, 1, 1)
        image[:, :, 16:] = torch.tensor(colours[right]).view(3, 1, 1)
        images.append((image + 20 * torch.randn(image.shape, generator=generator)).clamp(0, 255))
        captions.append(f'A satellite image of {left} and {right}')
    return torch.stack(images), captions


def test_trained_clip_prefers_the_true_caption() -> None:
    images, captions = _scenes(36, seed=0)
    rng_state = torch.random.get_rng_state()
    scorer = train_clip(images, captions, steps=150, batch_size=36)
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    held_out, true_captions = _scenes(18, seed=1)
    wrong = true_captions[3:] + true_captions[:3]  # another left colour for every scene
    matched = scorer.score(held_out, true_captions)
    mismatched = scorer.score(held_out, wrong)
    assert scorer.pretrained
    assert float(matched.mean()) > float(mismatched.mean()) + 10


def test_train_clip_checks_its_inputs() -> None:
    images, captions = _scenes(4, seed=0)
    with pytest.raises(ValueError, match='4 images but 3 captions'):
        train_clip(images, captions[:3])
    with pytest.raises(ValueError, match='>= 2'):
        train_clip(images[:1], captions[:1])
    with pytest.raises(ValueError, match='steps'):
        train_clip(images, captions, steps=0)
