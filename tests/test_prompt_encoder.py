# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Tests of the LRU prompt-embedding cache."""

from __future__ import annotations

import torch

from torchgeo_earthsynth.models import PromptEncoder, clip_tokenizer, tiny_text_encoder


def test_more_unique_prompts_than_the_cache_holds() -> None:
    tokenizer, text_encoder = clip_tokenizer(), tiny_text_encoder()
    cached = PromptEncoder(tokenizer, text_encoder, max_size=2)
    plain = PromptEncoder(tokenizer, text_encoder, cache=False)
    prompts = ['water', 'building', 'road', 'water', 'forest']
    out = cached(prompts)  # 4 unique prompts in one call, 2 kept
    assert torch.equal(out, plain(prompts))
    assert len(cached._cache) == 2
    assert list(cached._cache) == ['water', 'forest']  # the most recently used stay
    assert cached.misses == 4 and cached.hits == 1
    assert torch.equal(cached(['forest', 'road']), plain(['forest', 'road']))
    assert cached.hits == 2 and cached.misses == 5
    assert list(cached._cache) == ['forest', 'road']
