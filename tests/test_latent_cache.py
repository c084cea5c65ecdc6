# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Tests of the latent cache: exact losses, skipped encodes, misses, LRU bound, VAE warm-up."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from torchgeo_earthsynth.lightning_modules import EarthSynthControlNet
from torchgeo_earthsynth.lightning_modules.latent_cache import LatentCache

SIZE = 32


def make_batch(seed: int = 0, n: int = 2) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(n, SIZE, SIZE, dtype=torch.long)
    mask[:, : SIZE // 2] = 6
    return {
        'image': torch.rand(n, 3, SIZE, SIZE, generator=g) * 255,
        'mask': mask,
        'prompt': ['A satellite image of water'] * n,
    }


def count_encodes(model: EarthSynthControlNet) -> list[int]:
    """Rows the VAE encoder sees, one entry per call."""
    rows: list[int] = []
    model.vae.encoder.register_forward_hook(lambda _m, args, _out: rows.append(len(args[0])))
    return rows


def model(latent_cache: int, **kwargs: Any) -> EarthSynthControlNet:
    return EarthSynthControlNet(
        image_size=SIZE, val_num_samples=0, latent_cache=latent_cache, seed=0, **kwargs
    ).train()


def loss(m: EarthSynthControlNet, batch: dict[str, Any], seed: int | None) -> Tensor:
    if seed is None:  # the training path: global RNG
        torch.manual_seed(5)
        return m.diffusion_loss(batch)
    return m.diffusion_loss(batch, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('seed', [3, None])
def test_cached_loss_equals_uncached_on_miss_and_hit(seed: int | None) -> None:
    cached, plain = model(8), model(0)
    batch = make_batch()
    expected = loss(plain, batch, seed)
    rows = count_encodes(cached)
    first = loss(cached, batch, seed)  # misses
    second = loss(cached, batch, seed)  # hits
    assert rows == [2]
    assert cached.latent_cache is not None
    assert (cached.latent_cache.hits, cached.latent_cache.misses) == (2, 2)
    assert torch.equal(first, expected)
    assert torch.equal(second, expected)


def test_changed_image_misses_and_only_it_is_encoded() -> None:
    cached, plain = model(8), model(0)
    batch = make_batch()
    loss(cached, batch, 1)
    batch['image'][1, 0, 0, 0] += 1  # e.g. a CF-Comp composite
    rows = count_encodes(cached)
    got = loss(cached, batch, 1)
    assert rows == [1]
    assert cached.latent_cache is not None
    assert (cached.latent_cache.hits, cached.latent_cache.misses) == (1, 3)
    torch.testing.assert_close(got, loss(plain, batch, 1))


def test_lru_bound() -> None:
    cache = LatentCache(2)
    calls: list[int] = []

    def encode(images: Tensor) -> tuple[Tensor, Tensor]:
        calls.append(len(images))
        return images.mean(1, keepdim=True), images.std(1, keepdim=True)

    a, b, c = (torch.full((1, 3, 4, 4), float(v)) for v in range(3))
    cache.posterior(a, encode)
    cache.posterior(b, encode)
    cache.posterior(a, encode)  # a is now the most recent
    cache.posterior(c, encode)  # evicts b
    assert len(cache) == 2
    assert calls == [1, 1, 1]
    cache.posterior(torch.cat([a, c]), encode)
    assert calls == [1, 1, 1]
    cache.posterior(b, encode)
    assert calls == [1, 1, 1, 1]
    assert len(cache) == 2
    with pytest.raises(ValueError, match='positive'):
        LatentCache(0)


def test_hit_keeps_row_order_and_values() -> None:
    cache = LatentCache(4)

    def encode(images: Tensor) -> tuple[Tensor, Tensor]:
        return images * 2, images + 1

    a, b = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    cache.posterior(a, encode)
    mean, std = cache.posterior(torch.cat([b, a, b]), encode)
    assert torch.equal(mean[:, 0, 0, 0], torch.tensor([2.0, 0.0, 2.0]))
    assert torch.equal(std[:, 0, 0, 0], torch.tensor([2.0, 1.0, 2.0]))


def test_nothing_cached_while_the_vae_trains() -> None:
    m = model(8, vae_warmup_steps=1)
    assert m.vae_trainable
    batch = make_batch()
    rows = count_encodes(m)
    loss(m, batch, 0)
    loss(m, batch, 0)
    assert rows == [2, 2]
    assert m.latent_cache is None
    m._freeze_vae()
    loss(m, batch, 0)
    loss(m, batch, 0)
    assert rows == [2, 2, 2]
    assert m.latent_cache is not None and m.latent_cache.hits == 2
