# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Seeds per distributed rank and per generated sample, in one place."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ('distributed_rank', 'sample_seeds', 'seed_for_rank')


def distributed_rank() -> int:
    """This process' rank in the default process group (0 when there is none)."""
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def seed_for_rank(generator: torch.Generator, seed: int | None, seeded_rank: int) -> int:
    """Reseed ``generator`` with ``seed + rank`` once this process has a distributed rank.

    Every DDP process builds its modules with the same seed before the process group exists;
    without the offset all ranks would draw the same random choices for their own data.

    Args:
        generator: the module's CPU generator.
        seed: the module's seed (None: already random per process, left alone).
        seeded_rank: the rank the generator is seeded for now.

    Returns:
        The rank the generator is seeded for after the call.
    """
    rank = distributed_rank()
    if rank != seeded_rank and seed is not None:
        generator.manual_seed(seed + rank)
    return rank


def sample_seeds(seed: int, batch_idx: int, count: int, rank: int | None = None) -> Tensor:
    """One seed per sample of a batch, distinct across batches, batch sizes and ranks.

    Derived from ``(seed, rank, batch_idx)`` by NumPy's ``SeedSequence`` (63-bit values), so a
    short last batch does not reuse an earlier batch's seeds and DDP ranks do not share seeds.
    Reproducible for the same seed, rank and batch; pass dataset-derived seeds in the batch
    (``batch['seed']``) to be independent of the world size.

    Args:
        seed: the run's seed.
        batch_idx: the batch's index in this rank's loader.
        count: samples in the batch.
        rank: distributed rank (default: this process' rank).

    Returns:
        int64 [count] seeds.
    """
    rank = distributed_rank() if rank is None else rank
    state = np.random.SeedSequence([seed, rank, batch_idx]).generate_state(count, np.uint64)
    return torch.from_numpy((state >> np.uint64(1)).astype(np.int64))
