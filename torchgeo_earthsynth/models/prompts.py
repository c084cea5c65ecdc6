# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Text encoder front-end with an LRU prompt-embedding cache."""

from __future__ import annotations

import torch
from transformers import CLIPTextModel, CLIPTokenizer

__all__ = ('PromptEncoder',)


class PromptEncoder:
    """Text encoder front-end with an LRU prompt-embedding cache.

    The vocabulary is finite, so prompts repeat: a prompt seen before is not encoded again.
    Misses of a batch are encoded together; results equal uncached encoding.

    Args:
        tokenizer: the CLIP tokenizer.
        text_encoder: the (frozen) CLIP text model.
        cache: keep embeddings of seen prompts.
        max_size: most prompts kept (least recently used dropped first).
    """

    def __init__(
        self,
        tokenizer: CLIPTokenizer,
        text_encoder: CLIPTextModel,
        cache: bool = True,
        max_size: int = 4096,
    ) -> None:
        from collections import OrderedDict

        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.cache_enabled = cache
        self.max_size = max_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def _encode(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(
            prompts,
            padding='max_length',
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors='pt',
        ).input_ids.to(self.text_encoder.device)
        with torch.no_grad():
            out: torch.Tensor = self.text_encoder(ids)[0]
        return out

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> torch.Tensor:
        """Embeddings [B, 77, D] of the prompts, from the cache where possible."""
        if not self.cache_enabled:
            self.misses += len(prompts)
            return self._encode(list(prompts))
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        self.misses += len(missing)
        self.hits += len(prompts) - len(missing)
        device = self.text_encoder.device
        # This call's embeddings are gathered before any eviction: a batch may hold more
        # unique prompts than the cache keeps.
        found = dict(zip(missing, self._encode(missing))) if missing else {}
        for prompt in dict.fromkeys(prompts):
            if prompt not in found:
                embedding = self._cache[prompt]
                if embedding.device != device:  # the model moved since it was cached
                    embedding = embedding.to(device)
                found[prompt] = embedding
        for prompt in prompts:  # most recently used last, as in the call
            self._cache.pop(prompt, None)
            self._cache[prompt] = found[prompt]
        while len(self._cache) > self.max_size:
            self._cache.popitem(last=False)
        return torch.stack([found[prompt] for prompt in prompts])

    def clear(self) -> None:
        """Forget every cached embedding."""
        self._cache.clear()
