# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""A content-addressed cache of a frozen VAE's posteriors, so repeated images skip the encoder."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ('LatentCache',)

Encoder = Callable[[Tensor], tuple[Tensor, Tensor]]


class LatentCache:
    """The VAE posterior's ``mean`` and ``std`` per image, keyed by the image's bytes.

    Content addressing keeps it exact whatever the data pipeline did: an image that a
    CF-Comp composite or a flip changed has other bytes and simply misses. A hit returns
    the very tensors the encoder returned for those bytes, so ``mean + std * eps`` draws
    the same latent as ``DiagonalGaussianDistribution.sample`` would with the same ``eps``.
    Only valid while the VAE is frozen: the owner clears it and stops asking while the VAE
    trains. Entries are kept on the CPU in the encoder's dtype (a 256 px SD image's is
    32 KiB); the least recently used entry goes once ``max_entries`` is reached.

    .. versionadded:: 0.3
    """

    def __init__(self, max_entries: int) -> None:
        """Initialize an empty cache.

        Args:
            max_entries: most images kept (least recently used evicted first).

        Raises:
            ValueError: if ``max_entries`` is not positive.
        """
        if max_entries < 1:
            raise ValueError(f'max_entries must be positive, got {max_entries}')
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[bytes, tuple[Tensor, Tensor]] = OrderedDict()

    def __len__(self) -> int:
        """Number of images held."""
        return len(self._entries)

    def clear(self) -> None:
        """Drop every entry (the counts stay)."""
        self._entries.clear()

    @staticmethod
    def key(image: Tensor, tag: str = '') -> bytes:
        """A blake2b digest of one image's bytes, shape, dtype and an optional tag."""
        data = image.detach().contiguous().cpu()
        digest = hashlib.blake2b(f'{tuple(data.shape)}|{data.dtype}|{tag}'.encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
        return digest.digest()

    def posterior(self, images: Tensor, encode: Encoder, tag: str = '') -> tuple[Tensor, Tensor]:
        """The posterior ``mean`` and ``std`` of a batch, encoding only the images not held.

        Args:
            images: [B, C, H, W] the VAE's inputs.
            encode: maps [N, C, H, W] images to their posterior's ``(mean, std)``; called
                once, on the missing rows only, and not at all when every row hits.
            tag: folded into the keys (e.g. the VAE's dtype), so other encoders miss.

        Returns:
            ``(mean, std)`` of the whole batch, on ``images``' device.
        """
        keys = [self.key(image, tag) for image in images]
        missing = [i for i, k in enumerate(keys) if k not in self._entries]
        fresh: dict[int, tuple[Tensor, Tensor]] = {}
        if missing:
            mean, std = encode(images[missing])
            fresh = {i: (mean[j], std[j]) for j, i in enumerate(missing)}
        rows: list[tuple[Tensor, Tensor]] = []
        for i, k in enumerate(keys):
            if i in fresh:
                rows.append(fresh[i])
            else:  # read before storing, which may evict
                self._entries.move_to_end(k)
                mean_i, std_i = self._entries[k]
                rows.append((mean_i.to(images.device), std_i.to(images.device)))
        for i, value in fresh.items():
            self._store(keys[i], value)
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        return torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])

    def _store(self, key: bytes, value: tuple[Tensor, Tensor]) -> None:
        self._entries[key] = (value[0].detach().cpu().clone(), value[1].detach().cpu().clone())
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
